"""Faust worker settings: vision pool, detectors, sensor windows and alert rules, watchlists, notifiers.

Detectors are plug-ins chosen by their ``type`` key (a pydantic discriminated union, like the gateway's
cameras and sensors); each settings class names the class that implements it
(:mod:`citystream.processors.detectors` describes how to add one).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, ClassVar, Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from citystream.schemas.ranges import RANGES
from citystream.settings.base import Section

ALERT_TYPE = r"^[a-z0-9_]{1,64}$"


class AlertRule(Section):
    """One sensor alert rule with hysteresis: raise at ``raise_at``, clear only past ``clear_at``.

    ``threshold`` compares the 1-minute window mean; ``rate`` compares the rise of the window
    mean over the last ``per_minutes`` minutes (e.g. canal level cm per 10 min).
    """

    metric: str = Field(pattern=r"^[a-z0-9_]+$")
    kind: Literal["threshold", "rate"] = "threshold"
    alert_type: str = Field(pattern=ALERT_TYPE)
    raise_at: float
    clear_at: float
    per_minutes: int = Field(10, ge=1, le=1440)
    severity: Literal["info", "warning", "critical"] = "warning"

    @model_validator(mode="after")
    def _hysteresis(self) -> AlertRule:
        if self.clear_at > self.raise_at:
            raise ValueError("clear_at must not be above raise_at (hysteresis band)")
        return self


class MetricRange(Section):
    """Physically plausible range of one metric; readings outside go to the DLQ."""

    low: float
    high: float


class NotifierSettings(Section):
    """One notifier, chosen by ``type``: ``webhook`` (Alert JSON) or ``line`` (LINE Messaging API push)."""

    type: Literal["webhook", "line"]
    url: str = Field(pattern=r"^https?://.+")
    token: SecretStr | None = None
    to: str = Field("", description="LINE recipient (user, group or room id)")
    timeout_s: float = Field(5.0, gt=0)
    retries: int = Field(3, ge=0, le=20)
    backoff_s: float = Field(0.5, ge=0)
    rate_per_s: float = Field(5.0, gt=0, description="token bucket refill rate")
    burst: int = Field(10, ge=1)
    queue_size: int = Field(1000, ge=1, description="alerts waiting; beyond this they are dropped and counted")
    min_severity: Literal["info", "warning", "critical"] = "info"


class DetectorBase(Section):
    """What every detector entry has: its ``type`` and (not a setting) the class that implements it."""

    implementation: ClassVar[str]  # "module:Class", imported by processors.detectors.build


class PlatesDetectorSettings(DetectorBase):
    """Thai licence plates (``processors/plates/``): PlateRead events with keyed pseudonyms, plate watchlist alerts."""

    type: Literal["plates"]
    implementation: ClassVar[str] = "citystream.processors.plates.plates:PlatesDetector"


class FacesDetectorSettings(DetectorBase):
    """Faces (processors/faces/faces.py): FaceMatch events for watchlist hits only, face watchlist alerts.

    Matching uses ``worker.face_threshold`` and ``worker.face_upsample`` (shared with ``citystream faces``).
    """

    type: Literal["faces"]
    implementation: ClassVar[str] = "citystream.processors.faces.faces:FacesDetector"


DetectorSpec = Annotated[PlatesDetectorSettings | FacesDetectorSettings, Field(discriminator="type")]


def default_detectors() -> list[DetectorSpec]:
    """Plates, then faces: every frame is analysed by both and their events are sent in this order."""
    return [PlatesDetectorSettings(type="plates"), FacesDetectorSettings(type="faces")]


DEFAULT_RULES = [
    AlertRule(metric="pm25_ug_m3", alert_type="pm25_high", raise_at=37.6, clear_at=25.0, severity="warning"),
    AlertRule(metric="pm25_ug_m3", alert_type="pm25_very_high", raise_at=75.1, clear_at=50.0, severity="critical"),
    AlertRule(metric="water_level_cm", kind="rate", alert_type="water_rise", raise_at=20.0, clear_at=5.0,
              per_minutes=10, severity="critical"),
]

# The contract's plausible ranges (schemas/ranges.py), the one rule the bridge and the sink apply too.
DEFAULT_RANGES = {metric: MetricRange(low=b.low, high=b.high) for metric, b in RANGES.items()}


class WorkerSettings(Section):
    """Faust processors: app id, vision pool, per-tenant pseudonym keys, windows, alerts, notifiers."""

    app_id: str = Field("citystream-worker", pattern=r"^[A-Za-z0-9_.-]+$",
                        description="Faust app id (group, internal topics); kafka.topic_prefix is prepended")
    instance_id: str = Field("", pattern=r"^[A-Za-z0-9_.-]*$",
                             description="Kafka static group membership (group.instance.id), stable per replica: "
                                         "a restarted worker gets its partitions back at once instead of waiting "
                                         "for its dead predecessor's session to time out; '' = dynamic membership")
    data_dir: Path | None = Field(None, description="Faust's data directory (default: stack.home/worker/<app id>)")
    vision_processes: int = Field(0, ge=0, description="0 = one per core")
    frame_batch: int = Field(0, ge=0, description="frames in flight at most (0 = 2 x vision processes)")
    max_partition_fetch_bytes: int = Field(256 * 1024, ge=1024, description="bytes per partition in one fetch "
                                           "(a larger record still comes whole); small, so that a frame backlog "
                                           "never makes a fetch that carries readings slow")
    vision_timeout_s: float = Field(60.0, gt=0, description="a frame whose analysis takes longer is dead-lettered "
                                    "(vision_timeout) and the vision pool replaced")
    max_frame_pixels: int = Field(8192 * 8192, ge=1, description="JPEG headers above this go to the DLQ undecoded")
    pseudonym_keys: dict[str, SecretStr] = Field(default_factory=dict,
                                                 description="tenant -> HMAC key; '*' applies to other tenants")
    face_threshold: float = Field(0.6, gt=0, lt=2)
    watchlist_refresh_s: float = Field(1.0, gt=0, description="how often the matching index is rebuilt")
    alert_cooldown_s: float = Field(60.0, ge=0, description="one watchlist alert per camera and entry per period")
    face_upsample: int = Field(0, ge=0, le=2, description="dlib HOG upsampling (finds smaller faces, slower)")
    web_port: int = Field(0, ge=0, le=65535, description="Faust's own web server on 127.0.0.1 (0 = off)")
    window_s: int = Field(60, ge=1, description="tumbling window length by event time")
    allowed_lateness_s: float = Field(120.0, ge=0, description="out-of-order readings this late still count")
    stall_timeout_s: float = Field(120.0, ge=0, description="exit with code 3 when input records wait this long "
                                   "with none processed, for the supervisor to restart it (0 = never)")
    ranges: dict[str, MetricRange] = Field(default_factory=lambda: dict(DEFAULT_RANGES))
    alert_rules: list[AlertRule] = Field(default_factory=lambda: list(DEFAULT_RULES))
    notifiers: list[NotifierSettings] = Field(default_factory=list)
    detectors: list[DetectorSpec] = Field(default_factory=default_detectors,
                                          description="what the vision processes look for in every frame, in order "
                                                      "(chosen by type; each type at most once)")

    @field_validator("detectors")
    @classmethod
    def _one_of_each_type(cls, value: list[DetectorSpec]) -> list[DetectorSpec]:
        types = [d.type for d in value]
        repeated = sorted({t for t in types if types.count(t) > 1})
        if repeated:
            raise ValueError(f"each detector type may appear once; repeated: {', '.join(repeated)}")
        return value

    def pseudonym_key(self, tenant: str) -> bytes | None:
        """The tenant's HMAC key for plate pseudonyms (or the ``*`` entry), None when neither is configured."""
        secret = self.pseudonym_keys.get(tenant) or self.pseudonym_keys.get("*")
        return secret.get_secret_value().encode() if secret is not None else None
