"""``citystream sink``: Kafka -> ClickHouse in Arrow batches, offsets committed after the insert.

Delivery guarantee (effectively exactly once in the analyst views):

1. Records of ``raw.readings``, ``device.status``, ``plate.reads``, ``face.matches``, ``alerts`` and
   ``dlq`` (with ``kafka.topic_prefix``) collect in a window, per target table, until
   ``sink.batch_rows`` / ``batch_bytes`` / ``batch_age_s``. Frames with detections go to the
   claim-check store by their own rules (:mod:`citystream.sinks.frames`). Each record is checked
   against its contract. Sensor readings are kept as their bytes: ClickHouse checks a whole block of
   them against the contract's canonical JSON form and parses the ones that pass
   (:class:`citystream.sinks.fast.BulkJson`, no Python per record); any record it does not pass takes
   the full contract path, which alone decides poison records and their DLQ reasons.
2. Flush: once the window before it is committed, the window is handed to the inserter thread while
   the next one fills (one window in flight at most: the consumer waits when the store is slower).
   There its offset ranges go to ``_sink_windows`` first (write-ahead), then each table block goes in
   with an ``insert_deduplication_token`` derived from table + ranges. Back on the consumer's thread, refused
   rows and records failing their contract are produced to the DLQ (stage ``sink``) and delivery is
   confirmed, and only then are the window's offsets committed (synchronously; a failed commit is
   retried, then counted and logged: the rows are stored, so a later commit covers them or a re-read is
   deduplicated). Windows are committed in order, so at most one logged window is uncommitted.
3. A crash anywhere before the commit re-delivers the window. The restarted sink rebuilds exactly the
   logged window (:mod:`citystream.sinks.replay`), so the same tokens make ClickHouse drop the repeated
   blocks. Copies that still land (a bridge retry in another batch, a window that could not be rebuilt)
   share event_id and sorting key; ReplacingMergeTree and the ``v_*`` views (FINAL) hide them.
4. Store outages back off and retry the same block; nothing is committed meanwhile (Kafka holds the
   data). A stage error (a bug, not the data's fault nor the store's) is retried a few times, then the
   sink exits 1 without committing and logs why (:mod:`citystream.sinks.writer`). A poison record
   never blocks its partition: it is dead-lettered and its offset committed.
   A malformed record on the DLQ topic itself is stored in ``dead_letters`` directly (no DLQ loop).
5. Rebalance: revoked partitions are flushed and committed first; lost partitions drop the window
   uncommitted (the new owner re-reads it). Kafka errors (a broker restart, a moving coordinator, a
   dead predecessor still in the group) are transient everywhere in the loop: lookups are retried
   with backoff and the sink stays up; only a store that keeps failing until SIGTERM stops it.
6. Fault tests crash the sink through :meth:`Sink.inserted`, called after a window's inserts and before
   its dead letters and its commit (a subclass in the test harness SIGKILLs itself there).
7. SIGTERM/SIGINT: flush, commit, exit 0. On ``chdb://`` the sink owns the store and serves the
   read-only query endpoint (:mod:`citystream.sinks.query_server`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from prometheus_client import CollectorRegistry

from citystream import clickhouse
from citystream.retry import Backoff
from citystream.schemas import topics
from citystream.schemas.events import DeadLetter
from citystream.schemas.migrate import migrate
from citystream.schemas.wire import to_json
from citystream.settings import Settings
from citystream.sinks.batch import RawRows, Window
from citystream.sinks.frames import FrameArchiver
from citystream.sinks.metrics import SinkMetrics
from citystream.sinks.query_server import QueryServer
from citystream.sinks.replay import Replay, committed_offsets, pending_window
from citystream.sinks.rows import ROUTES, PoisonRecord, to_row
from citystream.sinks.writer import PoisonRow, StageError, Stopped, Writer

log = logging.getLogger(__name__)
REPLAY_TIMEOUT_S = 30.0
COMMIT_ATTEMPTS = 3
COMMIT_RETRY_S = 0.2
COMMITTED_ATTEMPTS = 5
PRUNE_EVERY_S = 3600.0
CONSUME_MAX = 50_000  # records per consume() call: fewer calls, one Python list per batch window
# Larger fetches per partition: librdkafka's 1 MiB default halves consume throughput on a 6-partition topic
# (measured 102 k vs 217 k records/s on 250 B readings). The local queue bound (queued.max.messages.kbytes)
# keeps its default, so memory stays bounded.
FETCH_TUNING = {"max.partition.fetch.bytes": 8 << 20, "fetch.max.bytes": 64 << 20}


def _headers(raw: Any) -> dict[str, str]:
    return {k: (v.decode(errors="replace") if isinstance(v, bytes) else str(v or "")) for k, v in (raw or [])}


class Sink:
    """One sink process: consumer, DLQ producer, writer, optional query endpoint."""

    def __init__(self, settings: Settings, registry: CollectorRegistry, stop: threading.Event | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.stop = stop or threading.Event()
        self.clock = clock
        self.metrics = SinkMetrics(registry, tables=[route.table for route in ROUTES.values()])
        self.routes = {settings.kafka.topic(base): route for base, route in ROUTES.items()}
        self.dlq_topic = settings.kafka.topic(topics.DLQ)
        self.window = Window(clock)
        self.replay: Replay | None = None
        self.assigned: set[tuple[str, int]] = set()
        self.inserter = ThreadPoolExecutor(1, thread_name_prefix="sink-insert")
        self.in_flight: tuple[Window, Future[list[PoisonRow]]] | None = None
        self.consumer: Any = None
        self.producer: Any = None
        self.writer: Writer | None = None
        self.frames: FrameArchiver | None = None
        self.next_prune = 0.0

    # ---- lifecycle -------------------------------------------------------------------------
    def run(self) -> int:
        """Consume until stopped; returns the exit code (0 after a clean flush and commit)."""
        ch = self.settings.clickhouse
        admin = clickhouse.connect(ch, database=False)
        migrate(admin, ch.database, retention_days=self.settings.retention.tables,
                image_days=self.settings.retention.dead_letter_image_days)
        self.writer = Writer(clickhouse.connect(ch), ch.database, self.metrics, self.settings.sink.retry_max_s,
                             self.stop, self.clock)
        server = None
        if clickhouse.chdb_path(ch.dsn) is not None:
            server = QueryServer(ch, self.settings.sink.query_host, self.settings.sink.query_port,
                                 privacy_token=self.settings.sink.privacy_token.get_secret_value() or None).start()
        kafka = self.settings.kafka.client_config()
        self.producer = Producer({**kafka, "enable.idempotence": True, "linger.ms": 5})
        self.consumer = Consumer({**kafka, **FETCH_TUNING, "group.id": self.settings.sink.group_id,
                                  "enable.auto.commit": False,
                                  "auto.offset.reset": "earliest", "enable.partition.eof": False,
                                  "session.timeout.ms": self.settings.sink.session_timeout_ms,
                                  **self.settings.sink.static_membership()})
        self.consumer.subscribe(list(self.routes), on_assign=self._on_assign, on_revoke=self._on_revoke,
                                on_lost=self._on_lost)
        if self.settings.sink.archive_frames:
            self.frames = FrameArchiver(self.settings, self.writer, self.consumer, self.metrics, self.clock)
        code = 0
        try:
            with clickhouse.advertise(ch, server.url if server else "", server.token if server else ""):
                code = self._loop()
        finally:
            self.inserter.shutdown(wait=True)
            if self.frames is not None:
                self.frames.close()
            self.consumer.close()
            self.producer.flush(10)
            if server is not None:
                server.stop()
        return code

    def _loop(self) -> int:
        limits = self.settings.sink
        try:
            while not self.stop.is_set():
                self._handle_all(self._next_messages(limits.batch_rows))
                self.metrics.pending.set(self.window.rows)
                if self.replay is not None:
                    if self.replay.complete():
                        self._finish_replay()
                elif self.window.is_full(limits.batch_rows, limits.batch_bytes, limits.batch_age_s):
                    self._hand_off()
                if self.in_flight is not None and self.in_flight[1].done():
                    self._complete()
                self._frames_step()
            if self.replay is None:
                self.flush()
        except Stopped:
            log.error("stopped while the store was failing; window not committed (Kafka re-delivers it)")
            return 1
        except StageError as exc:
            log.error("sink stopped on a stage error; window not committed (Kafka re-delivers it): %s", exc)
            return 1
        return 0

    def _frames_step(self) -> None:
        if self.frames is None:
            return
        self.frames.step()
        if self.clock() >= self.next_prune:
            self.next_prune = self.clock() + PRUNE_EVERY_S
            self.frames.prune()

    def _next_messages(self, limit: int) -> list[Any]:
        messages: list[Any] = self.consumer.consume(num_messages=min(limit, CONSUME_MAX), timeout=0.2)
        return messages

    # ---- records ---------------------------------------------------------------------------
    def _handle_all(self, messages: list[Any]) -> None:
        """Handle a consumed batch: records of a bulk route are kept as bytes (column-wise), the rest one by one."""
        if self.replay is not None:  # set only by the assign callback, i.e. inside consume(), never mid-batch
            for msg in messages:
                self._handle(msg)
            return
        topics = [msg.topic() for msg in messages]
        kinds = set(topics)
        for topic in kinds:
            mine = messages if len(kinds) == 1 else [m for m, t in zip(messages, topics, strict=True) if t == topic]
            route = self.routes.get(topic) if topic is not None else None
            if route is None or route.bulk is None or not self._add_bulk(topic, route.table, mine):
                for msg in mine:
                    self._handle(msg)

    def _add_bulk(self, topic: str, table: str, messages: list[Any]) -> bool:
        """Keep records of one bulk topic as bytes, with list comprehensions, no Python call per record.

        False (nothing kept) when one of them is an error or has no value: then they go one by one.
        """
        values = [m.value() for m in messages]
        if None in values or any([m.error() is not None for m in messages]):
            return False
        partitions = [m.partition() for m in messages]
        offsets = [m.offset() for m in messages]
        self.window.track_many(topic, partitions, offsets, sum(map(len, values)))
        self.window.add_raw_many(table, values, partitions, offsets, messages)
        return True

    def _per_record(self, window: Window, raw: RawRows, indices: list[int]) -> None:
        """Records of a raw block the store did not pass: the contract decides, row or dead letter."""
        route = self.routes[raw.messages[0].topic()]
        for index in indices:
            source = raw.source(index)
            partition, offset = raw.partitions[index], raw.offsets[index]
            try:
                row = to_row(route, source[2])
            except PoisonRecord as exc:
                self._dead_letter(source, exc.reason, exc.detail, (partition, offset), window)
                continue
            row["kafka_partition"] = partition
            row["kafka_offset"] = offset
            window.add(route.table, row, source)
            window.rows -= 1  # counted once already, as a raw record

    def _handle(self, msg: Any) -> None:
        if msg.error():
            log.warning("consumer error", extra={"error": str(msg.error())})
            return
        topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
        if self.replay is not None:
            if not self.replay.admit((topic, partition), offset, msg):
                return
            if (topic, partition) in self.replay.done:
                self.consumer.pause([TopicPartition(topic, partition)])
        value = msg.value()
        self.window.track(topic, partition, offset, len(value or b""))
        route = self.routes[topic]
        if route.bulk is not None and value is not None:  # the same path in a replay: the same blocks and tokens
            self.window.add_raw(route.table, value, partition, offset, msg)
            return
        source = (topic, msg.key(), value, msg.headers())
        try:
            row = to_row(route, value)
        except PoisonRecord as exc:
            self._dead_letter(source, exc.reason, exc.detail, (partition, offset))
            return
        row["kafka_partition"] = partition
        row["kafka_offset"] = offset
        self.window.add(route.table, row, source)

    def _dead_letter(self, source: tuple[str, bytes | None, bytes | None, Any], reason: str, detail: str,
                     position: tuple[int, int], window: Window | None = None) -> None:
        topic, key, value, raw_headers = source
        letter = DeadLetter.build(stage="sink", reason=reason, detail=detail, topic=topic, payload=value or b"",
                                  headers=_headers(raw_headers))
        self.metrics.dlq.labels(reason).inc()
        log.warning("record dead-lettered", extra={"topic": topic, "reason": reason, "detail": detail[:200]})
        window = window or self.window
        if topic == self.dlq_topic:  # never feed the DLQ from itself: store the letter directly
            dlq_route = self.routes[self.dlq_topic]
            row = dlq_route.to_row(letter)
            row.update(kafka_partition=position[0], kafka_offset=position[1])
            window.add(dlq_route.table, row, source)
        else:
            window.add_dead(self.dlq_topic, key, to_json(letter))

    # ---- flush -----------------------------------------------------------------------------
    def flush(self) -> None:
        """Insert the open window (after the one in flight), dead-letter refused rows, confirm, commit."""
        self._hand_off()
        self._complete()

    def _hand_off(self) -> None:
        """Start inserting the open window in the background once the window in flight is committed.

        At most one window is being inserted while the next one fills (a bounded hand-off): the
        consumer waits here when the store is slower. The open window's Arrow files are written before
        that wait, while the store still works on the window in flight. Its write-ahead log entry and
        its inserts follow on the inserter thread, after the window before it is committed, so at most
        one logged window is uncommitted (what :mod:`~citystream.sinks.replay` rebuilds). Its offsets
        are committed by :meth:`_complete`.
        """
        window = self.window
        if window.is_empty() or self.writer is None:
            self._complete()
            return
        self.window = Window(self.clock)
        self.metrics.pending.set(0)
        # Python work here, on the consumer's thread, while the inserter thread is in the store without the GIL.
        self.writer.prepare(window)
        try:
            self._complete()
        except BaseException:
            self.writer.discard(window)
            raise
        self.in_flight = (window, self.inserter.submit(self._insert, window))

    def _insert(self, window: Window) -> list[PoisonRow]:
        """Log a window ahead of its inserts, then insert it (the inserter thread)."""
        assert self.writer is not None
        self.writer.log_window(self.settings.sink.group_id, window)
        return self.writer.insert_window(window, int(time.time() * 1000), self._per_record, observe=False)

    def _complete(self) -> None:
        """Wait for the window in flight; dead-letter its refused rows, confirm DLQ delivery, commit its offsets."""
        if self.in_flight is None:
            return
        window, future = self.in_flight
        try:
            poison = future.result()
        finally:
            self.in_flight = None
        for bad in poison:
            if bad.source[0] == self.dlq_topic:
                self.metrics.dlq.labels("unstorable_dead_letter").inc()
                log.error("dead letter refused by ClickHouse; dropped", extra={"detail": bad.detail[:300]})
            else:
                self._dead_letter(bad.source, "value_out_of_range", f"{bad.table}: {bad.detail}",
                                  (bad.row["kafka_partition"], bad.row["kafka_offset"]), window)
        assert self.writer is not None
        self.writer.observe_latency(window)
        self.inserted(window)
        self.writer.produce_dead(self.producer, window.dead)
        offsets = [TopicPartition(t, p, o) for (t, p), o in sorted(window.commit_offsets().items())]
        self._commit(offsets)
        self.metrics.windows.inc()
        self._update_lag(offsets)
        log.debug("window committed", extra={"rows": window.rows, "partitions": len(offsets)})

    def _abandon(self) -> None:
        """Wait for the window in flight and drop it uncommitted (partitions lost: the new owner re-reads it)."""
        if self.in_flight is None:
            return
        _window, future = self.in_flight
        self.in_flight = None
        try:
            future.result()
        except Exception:
            log.exception("insert of an abandoned window failed")

    def inserted(self, window: Window) -> None:
        """Called after a window's inserts, before its dead letters and its commit (a seam for fault tests)."""

    def _commit(self, offsets: list[TopicPartition]) -> None:
        """Commit synchronously; retry retriable errors a few times, then log and go on.

        An uncommitted window is already stored: a later commit covers its offsets, or, after a
        rebalance, it is re-read and its copies are dropped (same window: dedup tokens) or hidden (FINAL).
        """
        backoff = Backoff(COMMIT_RETRY_S, COMMIT_RETRY_S * 4)
        for attempt in range(1, COMMIT_ATTEMPTS + 1):
            try:
                self.consumer.commit(offsets=offsets, asynchronous=False)
                return
            except KafkaException as exc:
                error = exc.args[0] if exc.args else None
                retriable = bool(getattr(error, "retriable", lambda: False)())
                log.warning("offset commit failed", extra={"attempt": attempt, "retriable": retriable,
                                                           "error": str(exc)})
                if not retriable or self.stop.wait(backoff.next()):
                    break
        self.metrics.commit_failures.inc()

    def _update_lag(self, offsets: list[TopicPartition]) -> None:
        for tp in offsets:
            try:
                _low, high = self.consumer.get_watermark_offsets(tp, cached=True)
            except KafkaException:
                continue
            if high >= 0:
                self.metrics.lag.labels(tp.topic, str(tp.partition)).set(max(0, high - tp.offset))

    # ---- rebalance and replay --------------------------------------------------------------
    def _on_assign(self, consumer: Any, partitions: list[Any]) -> None:
        self.metrics.ready.set(1)
        self.assigned = {(p.topic, p.partition) for p in partitions}
        consumer.assign(partitions)
        if self.writer is None or not partitions:
            return
        found = committed_offsets(consumer, partitions, self.stop, COMMITTED_ATTEMPTS)
        if found is None:
            log.warning("committed offsets unavailable: the logged window is not replayed (its copies, if any, "
                        "are hidden by the v_* views)", extra={"partitions": len(partitions)})
            return
        committed = {(p.topic, p.partition): p.offset for p in found}
        ranges = pending_window(self.writer.client, self.writer.database, self.settings.sink.group_id, committed)
        if ranges is None:
            return
        self.replay = Replay(ranges, self.clock() + REPLAY_TIMEOUT_S, self.clock)
        others = [p for p in partitions if (p.topic, p.partition) not in ranges]
        if others:
            consumer.pause(others)
        self.metrics.replayed.inc()
        log.warning("replaying the logged, uncommitted window", extra={"partitions": len(ranges)})

    def _finish_replay(self) -> None:
        replay = self.replay
        assert replay is not None
        self.replay = None
        self.flush()
        self.consumer.resume([TopicPartition(t, p) for t, p in sorted(self.assigned)])
        for msg in replay.held:
            if (msg.topic(), msg.partition()) in self.assigned:
                self._handle(msg)

    def _on_revoke(self, consumer: Any, partitions: list[Any]) -> None:
        try:
            self.flush()
        except Exception:
            log.exception("flush on revoke failed; window dropped uncommitted")
        self._reset()

    def _on_lost(self, consumer: Any, partitions: list[Any]) -> None:
        self.metrics.ready.set(0)
        log.warning("partitions lost; window dropped uncommitted", extra={"partitions": len(partitions)})
        self._abandon()
        self._reset()

    def _reset(self) -> None:
        self.window = Window(self.clock)
        self.replay = None
        self.assigned = set()


def run_sink(settings: Settings, registry: CollectorRegistry, stop: threading.Event | None = None) -> int:
    """Run a sink until ``stop`` is set; returns the exit code."""
    return Sink(settings, registry, stop).run()


__all__ = ["PoisonRow", "Sink", "run_sink"]
