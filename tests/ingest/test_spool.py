"""Disk spool and seq store: bounded by bytes, drop-oldest vs block, order, restart and kill -9."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from citystream.ingest.gateway.spool import ROW_OVERHEAD, Outgoing, Spool
from citystream.settings.gateway import SpoolSettings

pytestmark = pytest.mark.unit

KIB = 1024


def message(stream: str = "reading", device: str = "pm1", size: int = 100) -> Outgoing:
    """A message whose body encodes nothing but its size."""
    return Outgoing(stream, device, f"city/t/gw/sensor/{device}/{stream}", b"x" * size)


def tagged(seq: int, stream: str = "reading", size: int = 1000) -> Outgoing:
    """A message whose body names its seq, padded to ``size`` bytes."""
    body = f"seq={seq};".encode()
    return Outgoing(stream, "pm1", f"city/t/gw/sensor/pm1/{stream}", body + b"." * (size - len(body)))


def all_rows(spool: Spool) -> list[tuple[str, int, bytes]]:
    return [(r.stream, r.seq, r.payload) for r in spool.after(0, 1_000_000)]


def test_seq_per_stream_starts_at_zero_and_rows_come_back_in_order(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s.sqlite3", "gw1", SpoolSettings())
    for _ in range(3):
        spool.put("reading", tagged)
        spool.put("frame", lambda seq: tagged(seq, "frame"))
    rows = spool.after(0, 100)
    assert [(r.stream, r.seq) for r in rows] == [("reading", 0), ("frame", 0), ("reading", 1), ("frame", 1),
                                                ("reading", 2), ("frame", 2)]
    assert [r.id for r in rows] == sorted(r.id for r in rows)
    assert spool.after(rows[2].id, 2) == rows[3:5]
    assert rows[0].payload.startswith(b"seq=0;")
    assert spool.count == 6
    assert spool.bytes == sum(r.nbytes for r in rows)


def test_properties_survive_the_round_trip(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s.sqlite3", "gw1", SpoolSettings())
    props = (("camera", "cam-1"), ("seq", "0"), ("district", "รังสิต"))
    spool.put("frame", lambda seq: Outgoing("frame", "cam-1", "a/b", b"\xff\xd8jpeg", props))
    (row,) = spool.after(0, 10)
    assert row.properties == props
    assert row.payload == b"\xff\xd8jpeg"
    assert row.nbytes == len(b"\xff\xd8jpeg") + len("a/b") + sum(len(k) + len(v) for k, v in props) + ROW_OVERHEAD


def test_ack_removes_only_the_given_rows(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s.sqlite3", "gw1", SpoolSettings())
    for _ in range(5):
        spool.put("reading", tagged)
    rows = spool.after(0, 10)
    assert spool.ack([rows[0].id, rows[2].id, 999_999]) == 2
    assert [r.seq for r in spool.after(0, 10)] == [1, 3, 4]
    assert spool.count == 3
    assert spool.bytes == sum(r.nbytes for r in rows[1:2] + rows[3:])


def test_drop_oldest_keeps_the_spool_within_its_bytes_and_counts_evictions(tmp_path: Path) -> None:
    settings = SpoolSettings(max_bytes=64 * KIB, policy="drop_oldest")
    spool = Spool(tmp_path / "s.sqlite3", "gw1", settings)
    evicted = 0
    for _ in range(200):  # 200 x ~1.2 KiB = ~240 KiB into a 64 KiB spool
        result = spool.put("reading", tagged)
        assert result.refused is None
        evicted += result.evicted
        assert spool.bytes <= settings.max_bytes
    seqs = [seq for _, seq, _ in all_rows(spool)]
    assert evicted > 100
    assert len(seqs) + evicted == 200
    # the newest survive, contiguous and in order; the oldest went first
    assert seqs == list(range(200 - len(seqs), 200))
    assert spool.bytes == sum(r.nbytes for r in spool.after(0, 1000))


def test_too_large_message_is_refused_not_stored(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s.sqlite3", "gw1", SpoolSettings(max_bytes=64 * KIB))
    result = spool.put("frame", lambda seq: message("frame", size=65 * KIB))
    assert result.refused == "too_large"
    assert result.seq is None
    assert spool.count == 0
    assert spool.put("frame", lambda seq: message("frame")).seq == 0  # the refused one took no seq


def test_block_policy_refuses_after_waiting_when_nothing_is_acked(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s.sqlite3", "gw1", SpoolSettings(max_bytes=64 * KIB, policy="block"))
    stored = 0
    while spool.put("reading", tagged, wait_s=0).refused is None:
        stored += 1
    assert stored == spool.count
    before = all_rows(spool)
    result = spool.put("reading", tagged, wait_s=0.2)
    assert result.refused == "spool_full"
    assert result.blocked
    assert all_rows(spool) == before  # nothing evicted under the block policy
    stop = threading.Event()
    stop.set()
    assert spool.put("reading", tagged, stop=stop).refused == "spool_full"


def test_block_policy_waits_until_acks_make_room(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s.sqlite3", "gw1", SpoolSettings(max_bytes=64 * KIB, policy="block"))
    while spool.put("reading", tagged, wait_s=0).refused is None:
        pass
    oldest = spool.after(0, 5)

    def ack_later() -> None:
        time.sleep(0.3)
        spool.ack(r.id for r in oldest)

    threading.Thread(target=ack_later).start()
    result = spool.put("reading", tagged)  # no wait_s, no stop: waits for the acks
    assert result.refused is None
    assert result.blocked
    assert result.evicted == 0
    seqs = [seq for _, seq, _ in all_rows(spool)]
    assert seqs == list(range(5, seqs[-1] + 1))


def test_rows_and_seqs_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    spool = Spool(path, "gw1", SpoolSettings())
    for _ in range(4):
        spool.put("reading", tagged)
    spool.put("status", lambda seq: tagged(seq, "status"))
    assert spool.take_seq("status") == 1  # the last-will's reserved seq
    spool.ack([spool.after(0, 1)[0].id])
    spool.close()

    again = Spool(path, "gw1", SpoolSettings())
    assert [(s, q) for s, q, _ in all_rows(again)] == [("reading", 1), ("reading", 2), ("reading", 3), ("status", 0)]
    assert again.count == 4
    assert again.bytes == sum(r.nbytes for r in again.after(0, 10))
    assert again.put("reading", tagged).seq == 4
    assert again.put("status", lambda seq: tagged(seq, "status")).seq == 2
    assert again.put("frame", lambda seq: tagged(seq, "frame")).seq == 0
    # another gateway's counters in the same file are separate
    other = Spool(tmp_path / "s.sqlite3", "gw2", SpoolSettings())
    assert other.seqs.peek("reading") == 0


WRITER = """
import sys
from pathlib import Path
from citystream.ingest.gateway.spool import Outgoing, Spool
from citystream.settings.gateway import SpoolSettings
spool = Spool(Path(sys.argv[1]), "gw1", SpoolSettings())
while True:
    result = spool.put("reading", lambda seq: Outgoing("reading", "pm1", "t", f"seq={seq}".encode() + b"." * 500))
    print(result.seq, flush=True)
"""


def test_everything_committed_survives_kill_9_and_seq_continues(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    confirmed = []
    for line in proc.stdout:
        confirmed.append(int(line))
        if len(confirmed) >= 300:
            break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL

    spool = Spool(path, "gw1", SpoolSettings())
    seqs = [seq for _, seq, _ in all_rows(spool)]
    assert seqs == list(range(len(seqs)))  # no holes, in order
    assert set(confirmed) <= set(seqs)  # every acknowledged commit is there
    assert all(payload.startswith(f"seq={seq}".encode()) for _, seq, payload in all_rows(spool))
    assert spool.put("reading", lambda seq: message()).seq == len(seqs)
