"""Edge gateway settings: identity, MQTT login, publishing, spool, cameras and sensors.

Cameras and sensors are plugins chosen by their ``type`` key (pydantic discriminated unions).
A sensor without ``type`` is ``simulated`` (the first walking-skeleton configs had no type).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, SecretStr, Tag

from citystream.schemas.events import Metric
from citystream.settings.base import Section
from citystream.settings.stack import DEFAULT_HOME

DEVICE = r"^[A-Za-z0-9_.-]{1,64}$"


class MotionSettings(Section):
    """Motion gating: publish a frame only when enough pixels changed, plus a keyframe now and then."""

    enabled: bool = True
    pixel_threshold: int = Field(25, ge=1, le=255, description="grey-level change that counts as motion")
    min_changed_fraction: float = Field(0.003, ge=0.0, le=1.0, description="changed pixels needed")
    keyframe_interval_s: float = Field(10.0, gt=0, description="publish at least one frame this often")
    analysis_width: int = Field(160, ge=16, le=1920, description="frames are compared at this width")


class CameraBase(Section):
    """What every camera has: identity, output size/quality, fps cap, motion gating, reconnect."""

    device_id: str = Field(pattern=DEVICE)
    district: str = ""
    width: int = Field(1280, ge=16, le=8192, description="frames are resized to fit width x height")
    height: int = Field(720, ge=16, le=8192)
    jpeg_quality: int = Field(80, ge=10, le=100)
    fps: float = Field(5.0, gt=0, le=120, description="cap on frames considered per second")
    motion: MotionSettings = Field(default_factory=MotionSettings)
    reconnect_min_s: float = Field(1.0, gt=0)
    reconnect_max_s: float = Field(60.0, gt=0)


class VideoCamera(CameraBase):
    """A video file read with OpenCV; media time drives fps cap and keyframes."""

    type: Literal["video"]
    path: Path
    loop: bool = False
    realtime: bool = Field(True, description="pace reading at the capped fps; false reads as fast as possible")


class ImagesCamera(CameraBase):
    """A folder of images replayed in name order."""

    type: Literal["images"]
    path: Path
    pattern: str = "*.jpg"
    loop: bool = True
    realtime: bool = True


class UsbCamera(CameraBase):
    """A local capture device by index (``/dev/videoN``)."""

    type: Literal["usb"]
    index: int = Field(0, ge=0)


class UrlCamera(CameraBase):
    """An RTSP or HTTP(S) stream read with OpenCV."""

    type: Literal["rtsp", "http"]
    url: str = Field(pattern=r"^(rtsp|rtsps|http|https)://.+")


class SimulatedCamera(CameraBase):
    """Road-like frames with rendered Thai plates and sometimes a face (the traffic simulator)."""

    type: Literal["simulated"]
    seed: int = 0
    scenes: int = Field(8, ge=1, le=256, description="distinct scenes pre-rendered, then animated")
    face_every: int = Field(4, ge=0, description="every n-th scene carries a face (0: none)")


CameraSpec = Annotated[VideoCamera | ImagesCamera | UsbCamera | UrlCamera | SimulatedCamera,
                       Field(discriminator="type")]


class AnomalySpec(Section):
    """An injected episode: from ``start_s`` after start, ``duration_s`` long, peak added ``magnitude``."""

    start_s: float = Field(60.0, ge=0)
    duration_s: float = Field(600.0, gt=0)
    magnitude: float = 100.0


class SimulatedSensor(Section):
    """A sensor with a plausible daily pattern, noise and optional anomalies."""

    type: Literal["simulated"] = "simulated"
    device_id: str = Field(pattern=DEVICE)
    metric: Metric
    district: str = ""
    interval_s: float | None = Field(None, gt=0, description="default: gateway.interval_s")
    seed: int | None = None
    anomalies: list[AnomalySpec] = Field(default_factory=list)


class ReplaySensor(Section):
    """Readings replayed from CSV (``metric,value[,captured_at]``) or JSON lines with the same keys."""

    type: Literal["replay"]
    device_id: str = Field(pattern=DEVICE)
    path: Path
    metric: Metric | None = Field(None, description="used when a row has no metric")
    district: str = ""
    interval_s: float | None = Field(None, gt=0)
    loop: bool = False


def _sensor_type(value: Any) -> str:
    if isinstance(value, dict):
        return str(value.get("type", "simulated"))
    return str(getattr(value, "type", "simulated"))


SensorSpec = Annotated[Annotated[SimulatedSensor, Tag("simulated")] | Annotated[ReplaySensor, Tag("replay")],
                       Discriminator(_sensor_type)]


class SpoolSettings(Section):
    """Disk store-and-forward: every message is written here before it is published."""

    max_bytes: int = Field(256 * 1024 * 1024, ge=64 * 1024)
    policy: Literal["drop_oldest", "block"] = "drop_oldest"
    fsync: bool = Field(False, description="fsync every commit (survives power loss, slower); "
                                           "off still survives kill -9")


class GatewaySettings(Section):
    """One edge gateway: identity, MQTT login, publishing window, spool and its devices."""

    tenant: str = Field("nakhon-rangsit", pattern=r"^[a-z0-9-]+$")
    gateway_id: str = Field("gw-demo-1", pattern=r"^[A-Za-z0-9_.-]+$")
    username: str = ""
    password: SecretStr = SecretStr("")
    client_id: str = Field("", description="MQTT client id (default: citystream-gw-<gateway_id>)")
    state_dir: Path = DEFAULT_HOME / "gateway"
    interval_s: float = Field(1.0, gt=0, description="default sensor reading interval")
    heartbeat_s: float = Field(15.0, gt=0)
    max_inflight: int = Field(100, ge=1, le=65535, description="QoS 1 messages in flight, unacknowledged "
                              "(paho max_queued_messages; the bridge's bound has the same name)")
    reconnect_min_s: float = Field(0.5, gt=0)
    reconnect_max_s: float = Field(30.0, gt=0)
    drain_s: float = Field(5.0, ge=0, description="on shutdown, time to publish what is spooled")
    wait_for_bridge: bool = Field(True, description="publish on a connection only after a bridge announced its "
                                  "subscription on {root}/_bridge/ready (off: the broker may drop what arrives "
                                  "before the bridge re-subscribes, e.g. after a broker restart)")
    confirm: bool = Field(True, description="keep each message in the spool until a bridge confirms Kafka has it "
                          "(off: delete on the broker's PUBACK; a broker crash can then lose what it acked)")
    confirm_timeout_s: float = Field(30.0, gt=0, description="send a message again when it waited this long for "
                                     "its confirmation while later ones were confirmed (or while stopping)")
    bridge_wait_warn_s: float = Field(30.0, gt=0, description="log a warning when connected this long without "
                                      "a bridge announcement")
    connect_timeout_s: float = Field(10.0, gt=0)
    spool: SpoolSettings = Field(default_factory=SpoolSettings)
    cameras: list[CameraSpec] = Field(default_factory=list)
    sensors: list[SensorSpec] = Field(default_factory=list)
