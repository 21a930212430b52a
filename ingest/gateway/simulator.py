"""Traffic simulator: N gateways x M cameras x K sensors in one process, on the real broker.

Each simulated gateway is a full :class:`~citystream.ingest.gateway.gateway.Gateway` (spool, seq store,
publisher, motion gating), so the simulator exercises the same delivery path as a junction box:
at-least-once to the broker, counted per stream. Cameras render road scenes with Thai licence
plates (some with a face); sensors follow daily patterns with injected anomalies (a PM2.5 haze
episode and a canal level rise in the middle of the run). ``simulate`` returns :class:`SimStats`
so ``make demo``, tests and benchmarks can compare what was published with what was stored.

Identities: a simulated gateway has exactly the rights of a real one. On the local stack (its own
broker, ``stack up``) the simulator provisions one identity per simulated gateway before it starts
(``citystream gateway provision --rotate``, one broker reload for the fleet) and revokes them when it
stops; a kill -9 leaves them provisioned until the next run rotates them. Against another broker it
logs in with ``gateway.username`` / ``gateway.password`` (one provisioned identity: ``--gateways 1``,
gateway id ``{prefix}-gw-000``), see SECURITY.md.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from citystream.ingest import provision
from citystream.ingest.gateway.gateway import AuthRefused, Gateway
from citystream.ingest.gateway.publisher import GatewayMetrics
from citystream.schemas.events import Metric
from citystream.settings import Settings
from citystream.settings.gateway import AnomalySpec, GatewaySettings, SimulatedCamera, SimulatedSensor

log = logging.getLogger(__name__)

SENSOR_METRICS = (Metric.PM25, Metric.WATER_LEVEL, Metric.TEMPERATURE, Metric.HUMIDITY, Metric.NOISE, Metric.PM10)
DISTRICTS = ("รังสิต", "คลองหลวง", "ธัญบุรี", "ลำลูกกา", "เมืองปทุมธานี")
STREAMS = ("reading", "frame", "status")
MAX_CAMERA_FPS = 30.0  # a high sensor --rate does not make cameras faster than this


@dataclass
class SimStats:
    """What a simulation run did, per stream (``published`` = acknowledged by the broker)."""

    gateways: int
    cameras: int
    sensors: int
    duration_s: float
    captured: dict[str, int] = field(default_factory=dict)
    published: dict[str, int] = field(default_factory=dict)
    spooled: dict[str, int] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)
    left_in_spool: int = 0
    gateway_ids: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """Plain data for ``--json``."""
        return asdict(self)


def _anomalies(metric: Metric, duration: float) -> list[AnomalySpec]:
    if metric is Metric.PM25:
        return [AnomalySpec(start_s=duration * 0.3, duration_s=max(duration * 0.4, 1.0), magnitude=80.0)]
    if metric is Metric.WATER_LEVEL:
        return [AnomalySpec(start_s=duration * 0.4, duration_s=max(duration * 0.5, 1.0), magnitude=120.0)]
    return []


def gateway_settings(base: GatewaySettings, index: int, cameras: int, sensors: int, rate: float,
                     duration: float, *, prefix: str = "sim", camera_fps: float | None = None,
                     frame_size: tuple[int, int] = (640, 360), state_dir: Path | None = None) -> GatewaySettings:
    """Settings of the ``index``-th simulated gateway."""
    gateway_id = f"{prefix}-gw-{index:03d}"
    district = DISTRICTS[index % len(DISTRICTS)]
    cams = [SimulatedCamera(type="simulated", device_id=f"{gateway_id}-cam-{c:02d}", district=district,
                            width=frame_size[0], height=frame_size[1], fps=camera_fps or min(rate, MAX_CAMERA_FPS),
                            seed=index * 1000 + c, scenes=4)
            for c in range(cameras)]
    sens = []
    for s in range(sensors):
        metric = SENSOR_METRICS[s % len(SENSOR_METRICS)]
        sens.append(SimulatedSensor(device_id=f"{gateway_id}-{metric.value.split('_')[0]}-{s:02d}", metric=metric,
                                    district=district, interval_s=1.0 / rate, seed=index * 1000 + s,
                                    anomalies=_anomalies(metric, duration)))
    return base.model_copy(update={
        "gateway_id": gateway_id, "client_id": "", "cameras": cams, "sensors": sens,
        "state_dir": state_dir or base.state_dir, "heartbeat_s": min(base.heartbeat_s, max(duration / 3, 1.0))})


def _sample(registry: CollectorRegistry, name: str, label: str, values: tuple[str, ...]) -> dict[str, int]:
    out = {}
    for value in values:
        sample = registry.get_sample_value(name, {label: value})
        if sample:
            out[value] = int(sample)
    return out


def simulate(settings: Settings, gateways: int = 1, cameras: int = 1, sensors: int = 3, rate: float = 1.0,
             duration: float = 10.0, *, camera_fps: float | None = None, frame_size: tuple[int, int] = (640, 360),
             prefix: str = "sim", state_dir: Path | None = None, registry: CollectorRegistry | None = None,
             stop: threading.Event | None = None) -> SimStats:
    """Run the simulated gateways for ``duration`` seconds (or until ``stop``), drain, and count."""
    registry = registry or CollectorRegistry()
    metrics = GatewayMetrics(registry)
    specs = [gateway_settings(settings.gateway, i, cameras, sensors, rate, duration, prefix=prefix,
                              camera_fps=camera_fps, frame_size=frame_size, state_dir=state_dir)
             for i in range(gateways)]
    ids = [spec.gateway_id for spec in specs]
    local = provision.is_local_broker(settings)
    if not local and gateways > 1:
        raise AuthRefused(f"{settings.mqtt.host}:{settings.mqtt.port} is not this stack's own broker: the simulator "
                          f"cannot provision identities there, and the one login in gateway.username is pinned to "
                          f"one gateway: use --gateways 1 (gateway id {ids[0]}), one simulator per identity")
    if local:
        creds = provision.provision_many(settings, settings.gateway.tenant, ids, rotate=True)
        specs = [spec.model_copy(update={"username": creds[spec.gateway_id]["username"],
                                         "password": SecretStr(creds[spec.gateway_id]["password"])}) for spec in specs]
    try:
        return _run(settings, [Gateway(settings.mqtt, spec, metrics) for spec in specs], registry,
                    duration, sensors, cameras, rate, stop)
    finally:
        if local:
            provision.revoke_many(settings, settings.gateway.tenant, ids)


def _run(settings: Settings, fleet: list[Gateway], registry: CollectorRegistry, duration: float, sensors: int,
         cameras: int, rate: float, stop: threading.Event | None) -> SimStats:
    gateways = len(fleet)
    started = time.monotonic()
    for index, gw in enumerate(fleet):
        try:
            gw.start(connect_timeout_s=settings.gateway.connect_timeout_s)
        except BaseException:
            for other in fleet[:index]:
                other.stop(drain_s=0)
            for other in fleet[index + 1:]:
                other.spool.close()
            raise
    log.info("simulation running", extra={"gateways": gateways, "cameras": cameras, "sensors": sensors,
                                          "rate": rate, "duration_s": duration})
    (stop or threading.Event()).wait(duration)
    for gw in fleet:
        gw.stop_event.set()
    left = 0
    for gw in fleet:
        gw.stop()
        left += gw.spool.count
    dropped_values = ("spool_full", "too_large", "not_authorized", "refused", "bad_frame", "bad_reading")
    return SimStats(
        gateways=gateways, cameras=cameras, sensors=sensors, duration_s=round(time.monotonic() - started, 3),
        captured=_sample(registry, "citystream_gateway_captured_total", "stream", STREAMS),
        published=_sample(registry, "citystream_gateway_published_total", "stream", STREAMS),
        spooled=_sample(registry, "citystream_gateway_spooled_total", "stream", STREAMS),
        dropped=_sample(registry, "citystream_gateway_dropped_total", "reason", dropped_values),
        left_in_spool=left, gateway_ids=[gw.gw.gateway_id for gw in fleet])
