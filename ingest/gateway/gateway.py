"""The edge gateway: cameras and sensors -> disk spool -> MQTT v5 (QoS 1), one process per junction.

Threads: one per camera (read, fps cap, motion gate, resize + JPEG, store), one for all sensors and
the heartbeat, one publisher (:mod:`citystream.ingest.gateway.publisher`) that owns the MQTT client.

Delivery guarantee: everything captured is first committed to the spool together with its ``seq``
(:mod:`citystream.ingest.gateway.spool`), then published with QoS 1 and deleted only after its PUBACK, so a
broker outage, a full in-flight window, a restart or ``kill -9`` lose nothing that was stored
(at-least-once; copies carry the same ``event_id``). What is lost on purpose is counted in
``citystream_gateway_dropped_total{reason}`` and logged: ``spool_full`` (drop-oldest policy),
``too_large``, ``not_authorized`` (broker ACL), ``bad_frame`` / ``bad_reading`` (garbage input),
``spool_error`` (the disk refused a write, e.g. the file system is full).
The status stream's last-will (``offline``) carries a seq reserved when its session began, so it can
arrive after heartbeats with higher seqs; on a clean stop the gateway disconnects with reason 0x04
so the broker publishes it; a broker that dies with the session never does (one status-seq hole).
"""

from __future__ import annotations

import heapq
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

from pydantic import ValidationError

from citystream.ingest.gateway.cameras import (
    BadFrame,
    CameraError,
    CameraSource,
    Capture,
    Image,
    encode_frame,
    open_camera,
)
from citystream.ingest.gateway.motion import Decision, MotionGate
from citystream.ingest.gateway.publisher import GatewayMetrics, Publisher
from citystream.ingest.gateway.sensors import BadReading, SensorSource, open_sensor
from citystream.ingest.gateway.spool import Outgoing, Spool
from citystream.retry import Backoff
from citystream.schemas.events import DeviceState, DeviceStatus, FrameMeta, SensorReading, make_event_id
from citystream.schemas.topics import mqtt_topic
from citystream.schemas.wire import frame_meta_pairs, to_json
from citystream.settings import MqttSettings
from citystream.settings.gateway import CameraSpec, GatewaySettings

log = logging.getLogger(__name__)

WARN_EVERY_S = 10.0


class AuthRefused(Exception):
    """The broker refused the gateway's login (bad username/password or not authorized)."""


class Gateway:
    """One gateway: ``start``, then ``stop`` (drains the spool for up to ``drain_s``)."""

    def __init__(self, mqtt_settings: MqttSettings, settings: GatewaySettings, metrics: GatewayMetrics) -> None:
        self.mqtt = mqtt_settings
        self.gw = settings
        self.metrics = metrics
        self.stop_event = threading.Event()
        self.spool = Spool(settings.state_dir / f"{settings.gateway_id}.sqlite3", settings.gateway_id, settings.spool)
        self.publisher = Publisher(mqtt_settings, settings, self.spool, metrics, will=self._will)
        self._captures: list[threading.Thread] = []
        self._publisher_thread = threading.Thread(target=self.publisher.run, name=f"pub-{settings.gateway_id}",
                                                  daemon=True)
        self._frames_sent = 0
        self._dropped = 0
        self._last_logged: dict[str, float] = {}

    # -- message building ---------------------------------------------------------------------------------------

    def topic(self, family: str, device: str, stream: str) -> str:
        """MQTT topic of one of this gateway's device streams."""
        return mqtt_topic(self.mqtt.topic_root, self.gw.tenant, self.gw.gateway_id, family, device, stream)

    def _status(self, seq: int, state: DeviceState, detail: str = "", fps: float = 0.0) -> Outgoing:
        event = DeviceStatus(
            event_id=make_event_id(self.gw.gateway_id, "status", seq), tenant=self.gw.tenant,
            gateway_id=self.gw.gateway_id, device_id=self.gw.gateway_id, seq=seq, captured_at=datetime.now(UTC),
            state=state, queue_depth=self.spool.count, fps=round(fps, 3), dropped=self._dropped,
            spool_bytes=self.spool.bytes, detail=detail[:1024])
        topic = self.topic("gateway", self.gw.gateway_id, "status")
        return Outgoing("status", self.gw.gateway_id, topic, to_json(event))

    def _will(self) -> tuple[str, bytes]:
        msg = self._status(self.spool.take_seq("status"), DeviceState.OFFLINE, "last will")
        return msg.topic, msg.payload

    def store(self, stream: str, build: Callable[[int], Outgoing]) -> bool:
        """Commit one message (with its seq) to the spool; count what happened."""
        waiting = self.publisher.window_full
        try:
            result = self.spool.put(stream, build, stop=self.stop_event)
        except sqlite3.Error as exc:  # disk full, I/O error: the message cannot be kept
            self._dropped += 1
            self.metrics.dropped.labels("spool_error").inc()
            self._warn("spool_error", "spool write failed; message dropped", stream=stream, error=str(exc))
            return False
        if result.blocked:
            self._warn("spool_block", "spool full: capture blocked until the broker takes messages",
                       spool_bytes=self.spool.bytes, stream=stream)
        if result.evicted:
            self._dropped += result.evicted
            self.metrics.dropped.labels("spool_full").inc(result.evicted)
            self._warn("spool_full", "spool full: dropped oldest messages",
                       evicted=result.evicted, spool_bytes=self.spool.bytes)
        if result.refused is not None:
            self._dropped += 1
            self.metrics.dropped.labels(result.refused).inc()
            self._warn(result.refused, "message not stored", reason=result.refused, stream=stream)
            return False
        self.metrics.captured.labels(stream).inc()
        if waiting:
            self.metrics.spooled.labels(stream).inc()
        return True

    def _warn(self, key: str, message: str, **extra: object) -> bool:
        """A warning at most every 10 s per key (faults can repeat for hours); True if it was logged."""
        now = time.monotonic()
        if now - self._last_logged.get(key, -1e9) >= WARN_EVERY_S:
            self._last_logged[key] = now
            log.warning(message, extra={"gateway": self.gw.gateway_id, **extra})
            return True
        return False

    def status(self, state: DeviceState, detail: str = "", fps: float = 0.0) -> None:
        """Store a status event (heartbeat, online, camera error)."""
        self.store("status", lambda seq: self._status(seq, state, detail, fps))

    # -- cameras -------------------------------------------------------------------------------------------------

    def _camera_failed(self, spec: CameraSpec, exc: Exception, backoff: float) -> None:
        reason = str(exc.reason) if isinstance(exc, CameraError) else "crashed"
        self.metrics.camera_errors.labels(reason).inc()
        log.warning("camera unavailable; retrying", extra={"gateway": self.gw.gateway_id, "camera": spec.device_id,
                                                           "reason": reason, "error": str(exc), "retry_s": backoff})
        self.status(DeviceState.CAMERA_ERROR, f"camera {spec.device_id}: {exc}")

    def _store_frame(self, spec: CameraSpec, frame: Image, decision: Decision) -> None:
        started = time.perf_counter()
        try:
            jpeg, width, height = encode_frame(frame, spec.width, spec.height, spec.jpeg_quality)
        except (BadFrame, ValueError) as exc:
            self.metrics.dropped.labels("bad_frame").inc()
            self._warn("encode", "frame could not be encoded", camera=spec.device_id, error=str(exc))
            return
        self.metrics.encode_seconds.observe(time.perf_counter() - started)
        captured_at = datetime.now(UTC)
        topic = self.topic("camera", spec.device_id, "frame")

        def build(seq: int) -> Outgoing:
            meta = FrameMeta(event_id=make_event_id(self.gw.gateway_id, "frame", seq), tenant=self.gw.tenant,
                             gateway_id=self.gw.gateway_id, device_id=spec.device_id, seq=seq,
                             captured_at=captured_at, district=spec.district, width=width, height=height,
                             jpeg_bytes=len(jpeg), motion_score=round(decision.score, 5), keyframe=decision.keyframe)
            return Outgoing("frame", spec.device_id, topic, jpeg, tuple(frame_meta_pairs(meta)))

        if self.store("frame", build):
            self._frames_sent += 1

    def _read(self, source: CameraSource, spec: CameraSpec) -> Capture | None | bool:
        """One frame; False when it was a bad frame to skip."""
        try:
            return source.read()
        except BadFrame as exc:
            self.metrics.dropped.labels("bad_frame").inc()
            if self._warn(f"bad-{spec.device_id}", "camera returned garbage; frame skipped",
                          camera=spec.device_id, error=str(exc)):
                self.status(DeviceState.CAMERA_ERROR, f"camera {spec.device_id}: bad frame: {exc}")
            return False

    def _camera_loop(self, spec: CameraSpec) -> None:
        backoff, period = Backoff(spec.reconnect_min_s, spec.reconnect_max_s), 1.0 / spec.fps
        gate, source, next_due = MotionGate(spec.motion), None, float("-inf")
        while not self.stop_event.is_set():
            try:
                if source is None:
                    source = open_camera(spec, self.stop_event)
                    self.metrics.cameras_up.inc()
                    log.info("camera open", extra={"gateway": self.gw.gateway_id, "camera": spec.device_id})
                item = self._read(source, spec)
                if item is None:
                    log.info("camera source ended", extra={"gateway": self.gw.gateway_id, "camera": spec.device_id})
                    break
                if item is False or item is True:
                    continue
                frame, t = item
                backoff.reset()
                if t < next_due - 1e-6:
                    self.metrics.skipped.labels("fps_cap").inc()
                    continue
                next_due = max(next_due + period, t)
                decision = gate.check(frame, t)
                if not decision.publish:
                    self.metrics.skipped.labels("no_motion").inc()
                    continue
                self._store_frame(spec, frame, decision)
            except Exception as exc:
                if source is not None:
                    source.close()
                    source = None
                    self.metrics.cameras_up.dec()
                delay = backoff.next()
                self._camera_failed(spec, exc, delay)
                self.stop_event.wait(delay)
        if source is not None:
            source.close()
            self.metrics.cameras_up.dec()

    # -- sensors and heartbeat ----------------------------------------------------------------------------------

    def _read_sensor(self, index: int, source: SensorSource) -> bool:
        """Store one reading; False when the source is exhausted."""
        spec = self.gw.sensors[index]
        try:
            sample = source.read(datetime.now(UTC))
            if sample is None:
                return False
            when, metric, value = sample
            topic = self.topic("sensor", spec.device_id, "reading")
            reading = SensorReading(event_id=make_event_id(self.gw.gateway_id, "reading", 0), tenant=self.gw.tenant,
                                    gateway_id=self.gw.gateway_id, device_id=spec.device_id, seq=0,
                                    captured_at=when, district=spec.district, metric=metric, value=value)
        except (BadReading, ValidationError, OSError, UnicodeDecodeError) as exc:
            self.metrics.dropped.labels("bad_reading").inc()
            self._warn(f"bad-{spec.device_id}", "sensor returned a bad reading; skipped",
                       sensor=spec.device_id, error=str(exc)[:300])
            return True

        def build(seq: int) -> Outgoing:
            event = reading.model_copy(update={"seq": seq,
                                               "event_id": make_event_id(self.gw.gateway_id, "reading", seq)})
            return Outgoing("reading", spec.device_id, topic, to_json(event))

        self.store("reading", build)
        return True

    def _sensor_loop(self) -> None:
        started = datetime.now(UTC)
        sources: list[SensorSource | None] = []
        for spec in self.gw.sensors:
            try:
                sources.append(open_sensor(spec, started))
            except OSError as exc:
                log.error("sensor cannot start", extra={"gateway": self.gw.gateway_id, "sensor": spec.device_id,
                                                        "error": str(exc)})
                sources.append(None)
        now = time.monotonic()
        queue = [(now, i) for i, s in enumerate(sources) if s is not None] + [(now, -1)]
        heapq.heapify(queue)
        frames_at, last_beat = self._frames_sent, now
        while queue and not self.stop_event.is_set():
            due, index = heapq.heappop(queue)
            if self.stop_event.wait(max(0.0, due - time.monotonic())):
                break
            if index == -1:
                elapsed = max(time.monotonic() - last_beat, 1e-6)
                fps = (self._frames_sent - frames_at) / elapsed if elapsed >= 0.2 else 0.0
                frames_at, last_beat = self._frames_sent, time.monotonic()
                self.status(DeviceState.HEARTBEAT, fps=fps)
                heapq.heappush(queue, (due + self.gw.heartbeat_s, -1))
                continue
            source = sources[index]
            try:
                more = source is not None and self._read_sensor(index, source)
            except Exception:
                log.exception("sensor failed; retrying at its next interval",
                              extra={"gateway": self.gw.gateway_id, "sensor": self.gw.sensors[index].device_id})
                more = True
            if more:
                interval = self.gw.sensors[index].interval_s or self.gw.interval_s
                heapq.heappush(queue, (max(due + interval, time.monotonic() - interval), index))

    # -- lifecycle -----------------------------------------------------------------------------------------------

    def start(self, connect_timeout_s: float | None = None) -> None:
        """Start publishing and capturing; AuthRefused if the broker refuses the login at the first connect.

        Waits up to ``connect_timeout_s`` for the first connection attempt (a refused TCP connection ends
        the wait at once); an unreachable broker is not an error: capture starts and goes to the spool.
        """
        self._publisher_thread.start()
        if connect_timeout_s:
            self.publisher.connack.wait(connect_timeout_s)
        if not self.publisher.connected and self.publisher.auth_error is None:
            log.warning("broker not reachable yet; capturing into the spool",
                        extra={"gateway": self.gw.gateway_id, "host": self.mqtt.host, "port": self.mqtt.port})
        if self.publisher.auth_error is not None:
            self.stop(drain_s=0)
            raise AuthRefused(self.publisher.auth_error)
        self.status(DeviceState.ONLINE, "gateway started")
        for spec in self.gw.cameras:
            thread = threading.Thread(target=self._camera_loop, args=(spec,), daemon=True,
                                      name=f"cam-{self.gw.gateway_id}-{spec.device_id}")
            self._captures.append(thread)
        self._captures.append(threading.Thread(target=self._sensor_loop, daemon=True,
                                               name=f"sensors-{self.gw.gateway_id}"))
        for thread in self._captures:
            thread.start()

    def cameras_done(self) -> bool:
        """True when every camera thread has ended (finite sources played out)."""
        return all(not t.is_alive() for t in self._captures if t.name.startswith("cam-"))

    def stop(self, drain_s: float | None = None) -> None:
        """Stop capturing, publish what is spooled (up to ``drain_s``), disconnect, close the spool."""
        self.stop_event.set()
        for thread in self._captures:
            thread.join(timeout=10)
        self.publisher.stop(self.gw.drain_s if drain_s is None else drain_s)
        if self._publisher_thread.is_alive():
            self._publisher_thread.join()
        self.spool.close()
