"""The Faust app of ``citystream worker``: topics, tables and agents wired from Settings.

Agents: ``frames`` (the ``worker.detectors``, plates and faces by default; :mod:`frames_agent`,
:mod:`detectors`), ``readings`` (range checks, windows and alerts; :mod:`sensors`) and ``notify``
(alerts out through notifiers; :mod:`notifiers`).
Tables: ``sensor-state`` (per-sensor windows and alert state, changelog in Kafka) and the
``watchlists`` GlobalTable, whose changelog *is* the compacted ``watchlists`` topic, so every
worker holds every entry and the CLI's writes reach all workers.

Delivery: at least once for every output. Faust flushes the producer before it commits offsets;
table updates go to their changelog in the same flush. After a crash the uncommitted input is
read again: outputs repeat with the same deterministic ``event_id`` (the sink keeps one copy), and a
replayed reading may be counted twice in its window's aggregate. Notifications are best effort.
The Faust app id, consumer group and internal topics carry the ``kafka.topic_prefix``; the CLI
creates every topic (Faust's internal ones too) before the app joins its group. The gauge
``citystream_worker_ready`` turns 1 once partitions are assigned and tables recovered.
Faust 0.15.3 could drop input records silently after recovery seeks a partition back
(faust-streaming/faust#596): :mod:`faust_fixes` is applied first, and a record Faust still drops
unprocessed is logged at WARNING, counted in ``citystream_worker_dropped_records_total`` and read again;
the same module keeps the agents' queues when recovery resumes the streams (records fetched after its seek
were cleared unprocessed: the stall of issue 14, and commits past unprocessed frames).
A worker whose input waits unprocessed for ``worker.stall_timeout_s`` stops and exits with code 3
(:mod:`watchdog`), for its supervisor to restart it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import faust
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from pydantic import BaseModel, ValidationError

from citystream.processors import detectors, faust_fixes, frames_agent
from citystream.processors.frames_agent import VisionPool, pool_size
from citystream.processors.notifiers import Dispatcher
from citystream.processors.sensors.sensors import SensorState, SensorWindows, out_of_range
from citystream.processors.watchdog import (
    CHECK_EVERY_S,
    STALLED_EXIT,
    InputLag,
    StallWatch,
    input_positions,
    stall_diagnostics,
    stop_stalled_process,
)
from citystream.processors.watchlists.alerts import Cooldown
from citystream.processors.watchlists.watchlists import WatchlistIndex
from citystream.schemas.events import Alert, DeadLetter, SensorReading, error_summary
from citystream.schemas.topics import (
    ALERTS,
    DLQ,
    RAW_FRAMES,
    RAW_READINGS,
    TOPICS,
    WATCHLISTS,
    TopicSpec,
)
from citystream.schemas.wire import to_json
from citystream.settings import Settings

log = logging.getLogger(__name__)
SPECS: dict[str, TopicSpec] = {t.name: t for t in TOPICS}
FACE_CAMERA_LABELS = 200
SENSOR_TABLE = "sensor-state"


# The worker's usual dead-letter reasons (agents and detectors), pre-labelled at zero.
WORKER_DLQ_REASONS = ("invalid_reading", "out_of_range", "bad_frame_meta", "vision_error", "vision_timeout",
                      "invalid_output", "no_pseudonym_key")


class WorkerMetrics:
    """Prometheus collectors of the worker (labels bounded: outcomes, reasons, capped camera ids)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.frames = Counter("citystream_worker_frames_total", "Frames analysed", ["outcome"], registry=registry)
        self.dlq = Counter("citystream_worker_dlq_total", "Dead letters by reason", ["reason"], registry=registry)
        self.plates = Counter("citystream_worker_plates_total", "Plate reads", ["watchlist"], registry=registry)
        self.faces = Counter("citystream_worker_faces_total", "Faces seen per camera", ["camera"], registry=registry)
        self.face_matches = Counter("citystream_worker_face_matches_total", "Watchlist face hits", registry=registry)
        self.plate_confidence = Histogram("citystream_worker_plate_confidence", "Confidence of each plate read",
                                          buckets=(0.3, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95), registry=registry)
        self.vision_seconds = Histogram("citystream_worker_vision_seconds", "Vision time per frame",
                                        buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5), registry=registry)
        self.readings = Counter("citystream_worker_readings_total", "Sensor readings", ["outcome"], registry=registry)
        self.windows = Counter("citystream_worker_windows_closed_total", "Closed sensor windows", registry=registry)
        self.alerts = Counter("citystream_worker_alerts_total", "Alerts emitted", ["alert_type", "state"],
                              registry=registry)
        self.dropped = Counter("citystream_worker_dropped_records_total",
                               "Input records Faust dropped before processing them (read again)", ["topic"],
                               registry=registry)
        self.stalls = Counter("citystream_worker_stalls_total",
                              "Times the worker found its input waiting unprocessed and stopped", registry=registry)
        for family, values in ((self.dlq, WORKER_DLQ_REASONS), (self.frames, ("ok", "rejected")),
                               (self.readings, ("ok", "late", "invalid", "out_of_range")),
                               (self.plates, ("hit", "miss"))):
            for value in values:  # zero series from the start, so rules and panels see them
                family.labels(value)
        self.ready = Gauge("citystream_worker_ready", "1 once partitions are assigned and tables recovered",
                           registry=registry)
        self._cameras: set[str] = set()

    def count_faces(self, camera: str, count: int) -> None:
        """Add a frame's face count under its camera (cameras beyond the cap share ``other``)."""
        if camera not in self._cameras and len(self._cameras) < FACE_CAMERA_LABELS:
            self._cameras.add(camera)
        self.faces.labels(camera if camera in self._cameras else "other").inc(count)


class WatchlistTable(faust.GlobalTable):  # type: ignore[misc]
    """A GlobalTable over an existing topic: Faust's assignor otherwise looks for ``<app>-<table>-changelog``."""

    def _changelog_topic_name(self) -> str:
        if self._changelog_topic is not None:
            name: str = self._changelog_topic.get_topic_name()
            return name
        return str(super()._changelog_topic_name())


class WatchCache:
    """The watchlist GlobalTable as a matching index, rebuilt at most every ``refresh_s``."""

    def __init__(self, table: Any, refresh_s: float = 1.0) -> None:
        self.table = table
        self.refresh_s = refresh_s
        self._index = WatchlistIndex()
        self._built = float("-inf")

    def index(self) -> WatchlistIndex:
        """The current index (expiry is checked at match time, not here)."""
        if time.monotonic() - self._built >= self.refresh_s:
            self._index = WatchlistIndex.build(list(self.table.values()))
            self._built = time.monotonic()
        return self._index


@dataclass
class WorkerContext:
    """Everything the agents share: settings, vision pool, watchlists, output topics, metrics."""

    settings: Settings
    app: faust.App
    pool: VisionPool
    metrics: WorkerMetrics
    dispatcher: Dispatcher
    watch: WatchCache
    topics: dict[str, Any] = field(default_factory=dict)
    cooldown: Cooldown = field(default_factory=Cooldown)
    stalled: bool = False  # the watchdog stopped the worker: exit with watchdog.STALLED_EXIT

    async def send(self, name: str, event: BaseModel) -> None:
        """Send a contract as JSON keyed by its device id (buffered; flushed before offsets commit)."""
        await self.topics[name].send(key=getattr(event, "device_id", "").encode(), value=to_json(event))
        if isinstance(event, Alert):
            self.metrics.alerts.labels(event.alert_type, event.state).inc()

    async def dead_letter(self, topic: str, payload: bytes, reason: str, detail: str,
                          headers: dict[str, str] | None = None, tenant: str = "") -> None:
        """Send a DeadLetter with the original bytes and count it."""
        letter = DeadLetter.build(stage="worker", reason=reason, detail=detail, topic=topic, payload=payload,
                                  headers=headers, tenant=tenant)
        await self.topics["dlq"].send(key=tenant.encode(), value=to_json(letter))
        self.metrics.dlq.labels(reason).inc()
        log.warning("dead letter", extra={"reason": reason, "topic": topic, "detail": detail[:200]})

    def pseudonym_key(self, tenant: str) -> bytes | None:
        """The tenant's HMAC key (or the ``*`` key), None when neither is configured."""
        return self.settings.worker.pseudonym_key(tenant)


def broker_url(settings: Settings) -> str:
    """Faust broker URL list from the bootstrap servers."""
    return ";".join(f"kafka://{host.strip()}" for host in settings.kafka.bootstrap.split(",") if host.strip())


def app_id(settings: Settings) -> str:
    """The Faust app id: ``kafka.topic_prefix`` + ``worker.app_id`` (consumer group and internal topic names)."""
    return settings.kafka.topic(settings.worker.app_id)


def data_dir(settings: Settings) -> Path:
    """Faust's data directory: ``worker.data_dir``, else ``stack.home/worker/<app id>``."""
    return settings.worker.data_dir or settings.stack.home / "worker" / app_id(settings)


def make_faust_app(settings: Settings) -> faust.App:
    """A Faust app configured from Settings (raw bytes in and out, memory tables, web server off or loopback).

    Fetching is set so that a frame backlog does not hold readings back (head-of-line blocking; measured by
    the bench's ``alert_p99_s_frame_backlog``). One fetch carries at most ``worker.max_partition_fetch_bytes``
    per partition: a frame larger than that still comes whole, since the broker returns the first record
    batch of a partition whatever its size. With the DLQ's 8 MiB instead, a burst of frames made fetches
    of several MB that a reading produced after the burst had to wait for. ``broker_max_poll_records`` is
    unlimited: aiokafka fills a capped poll partition by partition in the order the fetches arrived, so
    readings fetched with a burst waited until the frames before them were handed to the frames agent; a
    whole poll goes through Faust's scheduler, which takes one record per topic in turn.
    """
    from citystream.processors.kafka_auth import broker_credentials

    w = settings.worker
    directory = data_dir(settings)
    directory.mkdir(parents=True, exist_ok=True)
    return faust.App(
        app_id(settings), broker=broker_url(settings), store="memory://", datadir=str(directory),
        key_serializer="raw", value_serializer="raw", autodiscover=False,
        web_enabled=w.web_port > 0, web_port=w.web_port or 6066, web_bind="127.0.0.1", web_host="127.0.0.1",
        producer_max_request_size=SPECS[DLQ].max_message_bytes, consumer_max_fetch_size=w.max_partition_fetch_bytes,
        broker_max_poll_records=None, producer_acks=-1,
        topic_replication_factor=1, table_cleanup_interval=60.0,
        consumer_group_instance_id=w.instance_id or None,
        broker_credentials=broker_credentials(settings.kafka),  # kafka.security_protocol, sasl_*, ssl_*
    )


def internal_topics(settings: Settings) -> dict[str, tuple[int, dict[str, str]]]:
    """Faust's own topics of this app: name -> (partitions, config)."""
    base = app_id(settings)
    return {f"{base}-{SENSOR_TABLE}-changelog": (SPECS[RAW_READINGS].partitions, {"cleanup.policy": "compact"}),
            f"{base}-__assignor-__leader": (1, {})}


def prepare_topics(settings: Settings, timeout_s: float = 30.0) -> None:
    """Create/update the topic map's and Faust's internal topics, then wait until the broker's metadata shows them.

    Faust creates its internal topics itself, but concurrently with joining the group: when the
    assignment runs before the new changelog is in the metadata, the table's partitions mismatch its
    source and the worker keeps rebalancing. Creating them first removes that race. Topic admin is
    :mod:`citystream.topics` (``citystream topics apply``), with ``kafka.replication_factor``.
    Note: ``make_faust_app`` still passes ``topic_replication_factor=1`` to Faust; it only matters for a
    topic Faust would create itself, and every one it uses exists by now.
    """
    from citystream import topics

    internal = [topics.extra_topic(settings, name, parts, conf)
                for name, (parts, conf) in internal_topics(settings).items()]
    topics.apply(settings, internal, timeout_s=timeout_s)


def create_app(settings: Settings, registry: CollectorRegistry, pool: VisionPool | None = None) -> WorkerContext:
    """The worker's Faust app with every agent and table registered; returns its context."""
    faust_fixes.apply()
    app = make_faust_app(settings)
    prefix = settings.kafka.topic
    watch_topic = app.topic(prefix(WATCHLISTS), key_serializer="raw", value_serializer="raw", partitions=1,
                            compacting=True, deleting=False)
    watch_table = app.tables.add(WatchlistTable(
        app, name="watchlists", beacon=app.tables.beacon, key_type=bytes, value_type=bytes, partitions=1,
        is_global=True, standby_buffer_size=1, recovery_buffer_size=1, changelog_topic=watch_topic))
    pool = pool or VisionPool(pool_size(settings.worker.vision_processes), timeout_s=settings.worker.vision_timeout_s,
                              detectors=detectors.build(settings.worker.detectors))
    ctx = WorkerContext(settings=settings, app=app, pool=pool,
                        metrics=WorkerMetrics(registry), dispatcher=Dispatcher(settings.worker.notifiers, registry),
                        watch=WatchCache(watch_table, settings.worker.watchlist_refresh_s),
                        cooldown=Cooldown(timedelta(seconds=settings.worker.alert_cooldown_s)))
    for name, base in {**detectors.outputs(pool.detectors), "alerts": ALERTS, "dlq": DLQ}.items():
        ctx.topics[name] = app.topic(prefix(base), key_serializer="raw", value_serializer="raw")
    for topic in (prefix(RAW_FRAMES), prefix(RAW_READINGS)):
        ctx.metrics.dropped.labels(topic)
    faust_fixes.watch(app, lambda topic, _partition, _offset: ctx.metrics.dropped.labels(topic).inc())
    frames_agent.register(app, ctx)
    register_readings(app, ctx)
    register_notify(app, ctx)

    async def readiness() -> None:
        ctx.metrics.ready.set(0 if app.rebalancing or not app.tables.recovery.completed.is_set() else 1)

    app.timer(0.5, name="readiness")(readiness)
    register_watchdog(app, ctx, registry)
    return ctx


def register_watchdog(app: faust.App, ctx: WorkerContext, registry: CollectorRegistry) -> None:
    """Export the input lag; exit 3 when the input waits unprocessed for ``worker.stall_timeout_s`` (0: never)."""
    watch = StallWatch(ctx.settings.worker.stall_timeout_s, lag=InputLag.on(registry))
    inputs = [ctx.settings.kafka.topic(RAW_FRAMES), ctx.settings.kafka.topic(RAW_READINGS)]

    async def liveness() -> None:
        if ctx.stalled:
            return
        if app.rebalancing or not app.tables.recovery.completed.is_set():
            watch.reset()
            return
        stalled = watch.stalled(input_positions(app.consumer, inputs))  # also exports the lag; 0 s never stalls
        if stalled:
            ctx.stalled = True
            ctx.metrics.stalls.inc()
            log.error("worker stalled: records wait in its input but none was processed; stopping so that the "
                      "supervisor restarts it", extra={"partitions": [f"{tp.topic}/{tp.partition}" for tp in stalled],
                                                       "stall_timeout_s": watch.timeout_s, "exit_code": STALLED_EXIT})
            log.error("worker stall diagnostics", extra=stall_diagnostics(app))
            stop_stalled_process()

    app.timer(CHECK_EVERY_S, name="liveness")(liveness)


def register_readings(app: faust.App, ctx: WorkerContext) -> faust.types.AgentT:
    """Sensor readings: validate, range-check, window by event time, alert with hysteresis."""
    w = ctx.settings.worker
    table = app.Table(SENSOR_TABLE, key_type=bytes, partitions=SPECS[RAW_READINGS].partitions)
    engine = SensorWindows(w.alert_rules, w.window_s, w.allowed_lateness_s)
    topic = app.topic(ctx.settings.kafka.topic(RAW_READINGS), key_serializer="raw", value_serializer="raw")

    async def readings(stream: faust.StreamT) -> None:
        async for event in stream.events():
            raw = event.value if isinstance(event.value, bytes) else b""
            try:
                reading = SensorReading.model_validate_json(raw)
            except ValidationError as exc:
                ctx.metrics.readings.labels("invalid").inc()
                await ctx.dead_letter(event.message.topic, raw, "invalid_reading", error_summary(exc))
                continue
            problem = out_of_range(reading, w.ranges)
            if problem is not None:
                ctx.metrics.readings.labels("out_of_range").inc()
                await ctx.dead_letter(event.message.topic, raw, "out_of_range", problem, tenant=reading.tenant)
                continue
            key = f"{reading.tenant}/{reading.device_id}".encode()
            state = SensorState.from_json(table.get(key))
            outcome = engine.apply(state, reading)
            table[key] = state.to_json()
            ctx.metrics.readings.labels("late" if outcome.late else "ok").inc()
            ctx.metrics.windows.inc(len(outcome.closed))
            for alert in outcome.alerts:
                await ctx.send("alerts", alert)

    return app.agent(topic, name="readings")(readings)


def register_notify(app: faust.App, ctx: WorkerContext) -> faust.types.AgentT:
    """Alerts from the alerts topic out through the notifiers (never waits on a notifier)."""
    topic = ctx.topics["alerts"]

    async def notify(stream: faust.StreamT) -> None:
        await ctx.dispatcher.start()
        try:
            async for raw in stream:
                try:
                    ctx.dispatcher.submit(Alert.model_validate_json(raw))
                except ValidationError as exc:
                    log.warning("undecodable alert skipped", extra={"error": error_summary(exc)[:200]})
        finally:
            await ctx.dispatcher.stop()

    return app.agent(topic, name="notify")(notify)
