"""Commit only what is done: a worker killed mid-backlog never committed a frame whose outputs were not in Kafka.

Slow frames (plate scenes: vision work) and fast frames (truncated JPEGs: an immediate dead letter)
alternate on two cameras (two partitions), so fast frames wait behind slow ones in the in-order
emitter while commits happen. The worker is killed with SIGKILL once its group committed part of
the backlog; at that moment every committed offset must already have all the outputs it has after
a restart finished the rest (issue 14: an offset committed with its plate read missing).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from citystream.schemas.topics import DLQ, PLATE_READS, RAW_FRAMES
from citystream.settings import Settings
from tests.processors.worker_helpers import (
    T0,
    TENANT,
    Outputs,
    Record,
    all_committed,
    committed_and_ends,
    frame_headers,
    plate_frames,
    produce_at,
    start_worker,
    stop_worker,
    wait_for_metric,
    worker_settings_for,
)


def interleaved(pairs: int) -> list[Record]:
    """Slow (plate scene) and fast (truncated JPEG) frames alternating on cam-0 and cam-1."""
    records: list[Record] = []
    for i, (_, _, body, _) in enumerate(plate_frames(0, pairs)):
        camera, seq = f"cam-{i % 2}", 2 * i
        records.append((RAW_FRAMES, camera.encode(), body, frame_headers(TENANT, camera, seq, body, T0)))
        records.append((RAW_FRAMES, camera.encode(), body[:5000], frame_headers(TENANT, camera, seq + 1, body, T0)))
    return records


def outputs_by_frame(outputs: Outputs) -> dict[str, set[str]]:
    """Frame event id -> ids of its plate reads and dead letters read so far."""
    out: dict[str, set[str]] = {}
    for _, doc, _ in outputs.records[PLATE_READS]:
        out.setdefault(doc["source_event_id"], set()).add(doc["event_id"])
    for _, doc, _ in outputs.records[DLQ]:
        out.setdefault(doc["headers"].get("event_id", ""), set()).add(doc["event_id"])
    return out


@pytest.mark.integration
def test_no_committed_frame_lacks_its_outputs_after_a_kill(settings: Settings, tmp_path: Path) -> None:
    s = worker_settings_for(settings, tmp_path)
    s = s.model_copy(update={"worker": s.worker.model_copy(update={"instance_id": "commit-done"})})
    records = interleaved(60)  # seconds of vision work: the first commit (every 2.8 s) lands mid-backlog
    where = produce_at(s, records)
    frame_of = {pos: dict(headers)["event_id"] for pos, (_, _, _, headers) in zip(where, records, strict=True)}
    config, log_path = tmp_path / "worker.yaml", tmp_path / "worker.log"
    with log_path.open("wb") as log:
        proc = start_worker(s, config, log)
        committed: dict[int, int] = {}
        try:
            deadline = time.monotonic() + 150
            while proc.poll() is None and time.monotonic() < deadline:
                committed = committed_and_ends(s, RAW_FRAMES)[0]
                if sum(max(o, 0) for o in committed.values()) > 0:
                    break
                time.sleep(0.2)
        finally:
            proc.kill()
            proc.wait(30)
        at_kill = committed
        assert 0 < sum(max(o, 0) for o in at_kill.values()), log_path.read_text()[-3000:]
        outputs = Outputs(s)
        try:
            outputs.read_to_end()
            before = outputs_by_frame(outputs)
            proc = start_worker(s, config, log)  # the same instance id: back at once, no rebalance wait
            try:
                # ready first: the killed worker may have committed everything already, and a SIGTERM before
                # Faust installs its handlers ends the process by the signal instead of a clean stop
                ready = wait_for_metric(proc, s.metrics.port, "citystream_worker_ready", 1, 90)
                assert ready == 1, log_path.read_text()[-3000:]
                deadline = time.monotonic() + 150
                while not all_committed(*committed_and_ends(s, RAW_FRAMES)) and time.monotonic() < deadline:
                    assert proc.poll() is None, log_path.read_text()[-3000:]
                    time.sleep(0.5)
            finally:
                assert stop_worker(proc) == 0, log_path.read_text()[-3000:]
            assert all_committed(*committed_and_ends(s, RAW_FRAMES)), log_path.read_text()[-3000:]
            outputs.read_to_end()
            after = outputs_by_frame(outputs)
        finally:
            outputs.close()
    done_at_kill = [pos for pos in where if pos[1] < at_kill[pos[0]]]
    lacking = {pos: after.get(frame_of[pos], set()) - before.get(frame_of[pos], set()) for pos in done_at_kill}
    assert not {pos: ids for pos, ids in lacking.items() if ids}, "committed before its outputs were produced"
    assert all(after.get(frame_of[pos]) for pos in where[1::2]), "every truncated frame has its dead letter"
    assert sum(bool(after.get(frame_of[pos])) for pos in where[0::2]) >= 10, "plate scenes give plate reads"
    assert done_at_kill and len(done_at_kill) < len(where), (at_kill, "the kill came in the middle of the backlog")


def skipped_during_rebalance(tmp_path: Path) -> tuple[list[int], int | None]:
    """Faust's real stream over frames 4..7 fetched before a rebalance (generation 1), read in generation 2.

    As ``Consumer.on_partitions_revoked`` does, the partition's committed offset (4) and acked offsets are
    dropped first, so nothing would stop a commit past them. Returns the offsets the consumer holds as
    acknowledged and the offset it would commit.
    """
    from faust.events import Event
    from faust.types import TP
    from faust.types.tuples import ConsumerMessage

    from tests.processors.test_flow_control import FRAMES, make_consumer

    async def scenario() -> tuple[list[int], int | None]:
        tp = TP(FRAMES, 0)

        async def unused(_: Any) -> None:
            return None

        app, consumer = make_consumer(tmp_path, unused, {tp: 8}, {tp: 4})
        app.consumer = consumer
        app.topics.acking_topics.add(FRAMES)
        for done in (consumer._committed_offset, consumer._acked, consumer._acked_index):  # revoked
            done.pop(tp, None)
        app.consumer_generation_id = 2
        app.flow_control.resume()
        stream = app.stream(app.channel(maxsize=10)).noack()
        queue = stream.channel.queue
        for offset in range(4, 8):
            message = ConsumerMessage(FRAMES, 0, offset, 0.0, 0, [], b"k", b"v", None, generation_id=1)
            message.incref()
            queue.put_nowait(Event(app, b"k", b"v", {}, message))
        processed: list[int] = []

        async def agent() -> None:
            async for value in stream:
                processed.append(len(value))

        task = asyncio.ensure_future(agent())
        for _ in range(200):
            await asyncio.sleep(0.01)
            if queue.empty():
                break
        await asyncio.sleep(0.05)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        assert queue.empty() and not processed, "the stream took every event and skipped it"
        return sorted(consumer._acked.get(tp, [])), consumer._new_offset(tp)

    return asyncio.run(scenario())


@pytest.mark.unit
def test_a_stream_does_not_acknowledge_records_it_skipped_after_a_rebalance(tmp_path: Path) -> None:
    """Canary: the stream iterator the worker uses (Faust's compiled one) leaves skipped records unacknowledged.

    Faust's pure-Python iterator (``Stream._py_aiter``) acknowledges them, which would let the group commit
    past records no agent processed; the worker relies on the compiled iterator being in use.
    """
    import faust.streams

    assert faust.streams._CStreamIterator is not None, "Faust's compiled stream iterator is not installed"
    acked, commit = skipped_during_rebalance(tmp_path)
    assert acked == [] and commit is None
