"""Claim-check store for camera frames that carry detections; ``frame_index`` holds the reference.

Only frames that a plate read or a face match points at (``source_event_id``) are kept; the JPEG goes
to the store (``sink.frames_dir``: ``{tenant}/{YYYY-MM-DD}/{device}/{event_id}.jpg``, written to a
temporary name and renamed) and its metadata, detection count, reference and SHA-256 to ``frame_index``
— never the image itself.

Delivery guarantee. A frame is decided only when both are true:

1. the worker's consumer group (``worker.app_id``) has committed past it on ``raw.frames``: the worker
   commits only after its outputs for the frame were produced, so every detection is in Kafka;
2. this sink's group has committed ``plate.reads`` and ``face.matches`` up to the end offsets seen after
   (1): every detection of the frame is stored in ClickHouse.

Then the detections are counted in the ``v_*`` views, the frames with detections are written and
indexed, and only then are the frames' offsets committed (group ``{sink.group_id}-frames``). A crash
before the commit decides the same frames again: the file is rewritten with the same bytes and the
index rows carry the same dedup token (and ``FINAL`` collapses them anyway). Frames without detections
are dropped and counted. While the worker does not move, frames wait in Kafka (bounded: at most
``FRAMES_PENDING_BYTES`` are held here; beyond that the frames consumer is paused). A Kafka error while
asking for offsets (a restarting broker, a moving group coordinator) is transient: the decision waits
and is asked again with backoff; nothing is committed meanwhile.

Retention: day folders older than ``retention.tables['frame_index']`` are deleted (0 = forever),
the same period as the index rows' TTL. The files are personal data: each is written 0600 and every
folder of the store 0700 (folders made earlier with wider modes are narrowed when written into), so
only the sink's user reads them; ``citystream privacy erase`` deletes the frames of an erased plate.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaException, TopicPartition
from pydantic import ValidationError

from citystream.retry import Backoff
from citystream.schemas import migrate as schema
from citystream.schemas import topics
from citystream.schemas.events import FrameMeta
from citystream.schemas.wire import frame_meta_from_pairs
from citystream.settings import Settings
from citystream.sinks.batch import Window
from citystream.sinks.metrics import SinkMetrics
from citystream.sinks.rows import ms
from citystream.sinks.writer import Writer

log = logging.getLogger(__name__)
FRAMES_PENDING_BYTES = 64 * 1024 * 1024
CHECK_EVERY_S = 0.5
MAX_CHECK_BACKOFF_S = 10.0
PRIVATE_FILE = 0o600
PRIVATE_DIR = 0o700
DETECTION_TOPICS = (topics.PLATE_READS, topics.FACE_MATCHES)


@dataclass(frozen=True)
class PendingFrame:
    """A frame read from Kafka, waiting for the worker and the detections."""

    topic: str
    partition: int
    offset: int
    meta: FrameMeta | None
    """None: the headers are not a FrameMeta (decided and committed, never stored)."""
    jpeg: bytes


def _header_pairs(raw: Any) -> list[tuple[str, str | bytes]]:
    return [(str(k), v if isinstance(v, (str, bytes)) else "") for k, v in (raw or [])]


class FrameArchiver:
    """Keeps frames with detections; driven by the sink's loop through :meth:`step`."""

    def __init__(self, settings: Settings, writer: Writer, main_consumer: Any, metrics: SinkMetrics,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.writer = writer
        self.main = main_consumer
        self.metrics = metrics
        self.clock = clock
        self.root = settings.sink.frames_dir
        self.topic = settings.kafka.topic(topics.RAW_FRAMES)
        kafka = settings.kafka.client_config()
        self.consumer = Consumer({**kafka, "group.id": f"{settings.sink.group_id}-frames",
                                  "enable.auto.commit": False, "auto.offset.reset": "earliest",
                                  "session.timeout.ms": settings.sink.session_timeout_ms,
                                  **settings.sink.static_membership("-frames")})
        self.worker = Consumer({**kafka, "group.id": settings.kafka.topic(settings.worker.app_id),
                                "enable.auto.commit": False})
        self.consumer.subscribe([self.topic], on_revoke=self._on_revoke, on_lost=self._on_revoke)
        self.pending: list[PendingFrame] = []
        self.pending_bytes = 0
        self.paused = False
        self.next_check = 0.0
        self.failures = 0
        self.backoff = Backoff(CHECK_EVERY_S * 2, MAX_CHECK_BACKOFF_S)
        self.gate: tuple[list[PendingFrame], list[TopicPartition]] | None = None

    def close(self) -> None:
        """Leave the group; undecided frames stay uncommitted (read again by the next owner)."""
        self.consumer.close()
        self.worker.close()

    def _on_revoke(self, consumer: Any, partitions: list[Any]) -> None:
        self.pending.clear()
        self.pending_bytes = 0
        self.paused = False
        self.gate = None

    def step(self) -> None:
        """Read frames (up to the bound) and decide those the worker and the sink are done with."""
        if not self.paused:
            for msg in self.consumer.consume(num_messages=500, timeout=0):
                self._read(msg)
            if self.pending_bytes >= FRAMES_PENDING_BYTES:
                self.consumer.pause(self.consumer.assignment())
                self.paused = True
        if self.pending and self.clock() >= self.next_check:
            self.next_check = self.clock() + CHECK_EVERY_S
            try:
                self._decide()
                self.failures = 0
                self.backoff.reset()
            except KafkaException as exc:  # coordinator moving, broker restarting: ask again later
                self.failures += 1
                self.next_check = self.clock() + self.backoff.next()
                if self.failures == 1 or self.failures % 10 == 0:
                    log.warning("frames: Kafka offsets unavailable, retrying", extra={
                        "error": str(exc), "failures": self.failures,
                        "retry_in_s": round(self.next_check - self.clock(), 1)})

    def _read(self, msg: Any) -> None:
        if msg.error():
            log.warning("frames consumer error", extra={"error": str(msg.error())})
            return
        meta: FrameMeta | None
        try:
            meta = frame_meta_from_pairs(_header_pairs(msg.headers()))
        except ValidationError:
            meta = None
        jpeg: bytes = msg.value() or b""
        if meta is None or not jpeg:
            self.metrics.frames.labels("invalid").inc()  # the worker dead-letters these with their bytes
            meta, jpeg = None, b""
        self.pending.append(PendingFrame(msg.topic(), msg.partition(), msg.offset(), meta, jpeg))
        self.pending_bytes += len(jpeg)

    def _worker_done(self) -> dict[int, int]:
        parts = sorted({f.partition for f in self.pending})
        committed = self.worker.committed([TopicPartition(self.topic, p) for p in parts], timeout=10)
        return {tp.partition: tp.offset for tp in committed if tp.offset >= 0}

    def _detection_ends(self) -> list[TopicPartition]:
        """End offsets of the detection topics now (after the worker gate passed)."""
        ends: list[TopicPartition] = []
        for spec in topics.TOPICS:
            if spec.name in DETECTION_TOPICS:
                for p in range(spec.partitions):
                    tp = TopicPartition(self.settings.kafka.topic(spec.name), p)
                    _low, high = self.main.get_watermark_offsets(tp, timeout=10)
                    if high > 0:
                        ends.append(TopicPartition(tp.topic, p, high))
        return ends

    def _stored_up_to(self, ends: list[TopicPartition]) -> bool:
        """Whether this sink's group has committed every detection partition up to ``ends``."""
        if not ends:
            return True
        committed = {(tp.topic, tp.partition): tp.offset for tp in self.main.committed(ends, timeout=10)}
        return all(committed.get((tp.topic, tp.partition), -1) >= tp.offset for tp in ends)

    def _decide(self) -> None:
        if self.gate is None:
            done = self._worker_done()
            ready = [f for f in self.pending if f.offset < done.get(f.partition, -1)]
            if not ready:
                return
            # Snapshot the detection topics' ends now: every output of these frames is below them.
            self.gate = (ready, self._detection_ends())
        ready, ends = self.gate
        if not self._stored_up_to(ends):
            return
        self.gate = None
        real = [(f, f.meta) for f in ready if f.meta is not None]
        counts = self._detection_counts([meta.event_id for _f, meta in real]) if real else {}
        window = Window(self.clock)
        for frame in ready:
            window.track(frame.topic, frame.partition, frame.offset, len(frame.jpeg))
        for frame, meta in real:
            n = counts.get(meta.event_id, 0)
            if n == 0:
                self.metrics.frames.labels("no_detection").inc()
                continue
            ref, digest = self._store(meta, frame.jpeg)
            window.add(schema.FRAME_INDEX, _index_row(frame, meta, n, ref, digest), (frame.topic, None, None, None))
            self.metrics.frames.labels("stored").inc()
        if window.rows:
            poison = self.writer.insert_window(window, int(time.time() * 1000))
            for bad in poison:
                self.metrics.frames.labels("index_refused").inc()
                log.error("frame index row refused; the file stays, unindexed", extra={"detail": bad.detail[:300]})
        offsets = [TopicPartition(t, p, o) for (t, p), o in sorted(window.commit_offsets().items())]
        try:
            self.consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:  # decided again later: same files, index copies collapse in FINAL
            log.warning("frames offset commit failed", extra={"error": str(exc)})
        decided = {(f.partition, f.offset) for f in ready}
        self.pending = [f for f in self.pending if (f.partition, f.offset) not in decided]
        self.pending_bytes = sum(len(f.jpeg) for f in self.pending)
        if self.paused and self.pending_bytes < FRAMES_PENDING_BYTES:
            self.consumer.resume(self.consumer.assignment())
            self.paused = False

    def _detection_counts(self, event_ids: list[str]) -> dict[str, int]:
        db = f"`{self.writer.database}`"
        sql = (f"SELECT source_event_id AS id, count() AS n FROM (SELECT source_event_id FROM {db}."
               f"{schema.view_of(schema.PLATE_READS)} WHERE source_event_id IN {{ids:Array(String)}} UNION ALL "
               f"SELECT source_event_id FROM {db}.{schema.view_of(schema.FACE_MATCHES)} "
               f"WHERE source_event_id IN {{ids:Array(String)}}) GROUP BY id")
        rows = self.writer.retrying("detection lookup", schema.FRAME_INDEX, lambda: self.writer.client.query(
            sql, parameters={"ids": event_ids}).result_rows)
        return {str(i): int(n) for i, n in rows}

    def _store(self, meta: FrameMeta, jpeg: bytes) -> tuple[str, str]:
        return store_frame(self.root, meta, jpeg)

    def prune(self) -> int:
        """Delete day folders older than the frame retention; returns how many were deleted."""
        return prune_frames(self.root, self.settings.retention.days(schema.FRAME_INDEX))


def store_frame(root: Path, meta: FrameMeta, jpeg: bytes) -> tuple[str, str]:
    """Write one frame (file 0600, folders 0700, via a temporary name); returns its reference and SHA-256."""
    rel = Path(meta.tenant, meta.captured_at.date().isoformat(), meta.device_id, f"{meta.event_id}.jpg")
    folder = root
    for part in ("", *rel.parent.parts):  # the store's root, then each folder under it
        folder = folder / part
        folder.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
        if folder.stat().st_mode & 0o777 != PRIVATE_DIR:  # made before, or by mkdir under a umask
            folder.chmod(PRIVATE_DIR)
    path = root / rel
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE)
    with os.fdopen(fd, "wb") as out:
        os.fchmod(out.fileno(), PRIVATE_FILE)  # a leftover .tmp keeps its old mode otherwise
        out.write(jpeg)
    tmp.replace(path)
    return rel.as_posix(), hashlib.sha256(jpeg).hexdigest()


def prune_frames(root: Path, days: int, today: date | None = None) -> int:
    """Delete ``root/{tenant}/{YYYY-MM-DD}`` folders older than ``days`` (0 = keep forever); returns the count."""
    if days <= 0 or not root.is_dir():
        return 0
    cutoff = (today or datetime.now(UTC).date()) - timedelta(days=days)
    removed = 0
    for day_dir in root.glob("*/*"):
        try:
            day = date.fromisoformat(day_dir.name)
        except ValueError:
            continue
        if day < cutoff:
            shutil.rmtree(day_dir, ignore_errors=True)
            removed += 1
    return removed


def _index_row(frame: PendingFrame, meta: FrameMeta, detections: int, ref: str, digest: str) -> dict[str, Any]:
    return {"event_id": meta.event_id, "schema_version": meta.schema_version, "tenant": meta.tenant,
            "gateway_id": meta.gateway_id, "device_id": meta.device_id, "seq": meta.seq,
            "captured_at": ms(meta.captured_at), "district": meta.district, "width": meta.width,
            "height": meta.height, "jpeg_bytes": len(frame.jpeg), "motion_score": meta.motion_score,
            "keyframe": meta.keyframe, "detections": min(detections, 65_535), "object_ref": ref, "sha256": digest,
            "kafka_partition": frame.partition, "kafka_offset": frame.offset}
