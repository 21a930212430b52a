"""Claim-check store: only frames with detections are kept, after the worker and the sink are done with them."""

from __future__ import annotations

import hashlib
from datetime import date, timedelta
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from citystream.schemas import topics
from citystream.schemas.events import FrameMeta, make_event_id
from citystream.schemas.wire import frame_meta_pairs
from citystream.settings import Settings
from citystream.sinks.frames import prune_frames
from tests.sinks.factory import T0, TENANT, face, plate
from tests.sinks.procs import SinkProcess, produce, sink_settings, wait_for


def frame(seq: int) -> tuple[FrameMeta, bytes]:
    """Frame ``seq`` of camera cam-01 (the source of ``plate(seq, ...)`` and ``face(seq)``) and its bytes."""
    jpeg = b"\xff\xd8" + f"frame-{seq}".encode() * 50 + b"\xff\xd9"
    meta = FrameMeta(event_id=make_event_id("gw-cam", "frame", seq), tenant=TENANT, gateway_id="gw-cam",
                     device_id="cam-01", seq=seq, captured_at=T0 + timedelta(seconds=seq), width=640, height=480,
                     jpeg_bytes=len(jpeg), motion_score=0.4)
    return meta, jpeg


def offsets_of(settings: Settings, group: str, topic: str) -> tuple[dict[int, int], dict[int, int]]:
    """Committed offsets of ``group`` and the high watermarks of ``topic``'s partitions with data."""
    consumer = Consumer({**settings.kafka.client_config(), "group.id": group, "enable.auto.commit": False})
    try:
        parts = [TopicPartition(topic, p) for p in range(6)]
        ends = {tp.partition: consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in parts}
        ends = {p: high for p, high in ends.items() if high > 0}
        committed = {tp.partition: tp.offset for tp in consumer.committed(parts, timeout=10) if tp.partition in ends}
        return committed, ends
    finally:
        consumer.close()


@pytest.mark.integration
def test_only_frames_with_detections_are_stored_once_worker_and_sink_are_done(settings: Settings,
                                                                              tmp_path: Path) -> None:
    frames_dir = tmp_path / "frames"
    sink = SinkProcess(sink_settings(settings, tmp_path, frames_dir=frames_dir), tmp_path / "sink.yaml").start()
    raw_frames = settings.kafka.topic(topics.RAW_FRAMES)
    try:
        producer = Producer(settings.kafka.client_config())
        for seq in range(4):
            meta, jpeg = frame(seq)
            producer.produce(raw_frames, value=jpeg, key=b"cam-01", headers=frame_meta_pairs(meta))
        producer.produce(raw_frames, value=b"\xff\xd8broken", key=b"cam-01", headers=[("width", "x")])
        assert producer.flush(30) == 0
        produce(settings, [plate(1, "a"), plate(3, "b"), face(3)])
        wait_for("the detections stored", lambda: sink.count("v_plate_reads") + sink.count("v_face_matches") == 3)
        # The worker has not committed these frames yet, so none can be decided.
        assert sink.count("frame_index") == 0 and not frames_dir.exists()

        worker = Consumer({**settings.kafka.client_config(), "group.id": settings.kafka.topic(settings.worker.app_id),
                           "enable.auto.commit": False})
        _committed, ends = offsets_of(settings, settings.kafka.topic(settings.worker.app_id), raw_frames)
        worker.commit(offsets=[TopicPartition(raw_frames, p, o) for p, o in ends.items()], asynchronous=False)
        worker.close()

        wait_for("two frames indexed", lambda: sink.count("v_frame_index") == 2)
        rows = sink.rows("SELECT event_id, detections, object_ref, sha256, jpeg_bytes, width FROM v_frame_index "
                         "ORDER BY seq")
        assert [(r["event_id"], r["detections"]) for r in rows] == [(frame(1)[0].event_id, 1),
                                                                    (frame(3)[0].event_id, 2)]
        for row, seq in zip(rows, (1, 3), strict=True):
            stored = (frames_dir / row["object_ref"]).read_bytes()
            assert stored == frame(seq)[1]
            assert row["sha256"] == hashlib.sha256(stored).hexdigest() and row["jpeg_bytes"] == len(stored)
        assert sorted(p.name for p in frames_dir.rglob("*") if p.is_file()) == sorted(
            f"{frame(s)[0].event_id}.jpg" for s in (1, 3))
        assert sink.metric("citystream_sink_frames_total", outcome="stored") == 2
        assert sink.metric("citystream_sink_frames_total", outcome="no_detection") == 2
        assert sink.metric("citystream_sink_frames_total", outcome="invalid") == 1

        def frames_committed() -> bool:
            committed, ends = offsets_of(settings, f"{settings.sink.group_id}-frames", raw_frames)
            return committed == ends

        wait_for("the frames' offsets committed", frames_committed)
        assert sink.terminate() == 0
    finally:
        sink.kill()


@pytest.mark.unit
def test_prune_deletes_day_folders_past_retention(tmp_path: Path) -> None:
    today = date(2026, 11, 25)
    for day in ("2026-10-01", "2026-10-26", "2026-11-20", "not-a-day"):
        (tmp_path / TENANT / day / "cam-01").mkdir(parents=True)
    assert prune_frames(tmp_path, 30, today) == 1
    assert sorted(p.name for p in (tmp_path / TENANT).iterdir()) == ["2026-10-26", "2026-11-20", "not-a-day"]
    assert prune_frames(tmp_path, 0, today) == 0
    assert prune_frames(tmp_path / "missing", 30, today) == 0
