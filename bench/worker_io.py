"""The worker loop's instruments: input it produces and remembers, outputs it reads, the checks, the processes.

See :mod:`citystream.bench.worker_loop` for what the loops do with them.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import cv2
import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from citystream.bench import messages
from citystream.bench.common import Procs
from citystream.ingest.bridge.validate import fast_event_id
from citystream.schemas.topics import ALERTS, DLQ, PLATE_READS, RAW_FRAMES, RAW_READINGS
from citystream.settings import Settings
from citystream.stack.procs import free_port

GATEWAY = "loop-gw"
CAMERAS = 6
DEADLINE_S = 240.0
T0 = datetime(2026, 1, 15, 6, 0, tzinfo=UTC)
PM25 = [10.0] * 3 + [48.0, 52.0, 55.0, 50.0] + [10.0] * 4  # one value per minute: one pm25_high episode
STALLED_EXIT = 3


def plate_jpegs(count: int, seed: int) -> list[bytes]:
    """``count`` 720p simulator road scenes with one Thai plate each, as JPEG bytes."""
    from citystream.processors.plates.synth import road_scene_with_plate

    rng = random.Random(seed)
    out = []
    for _ in range(count):
        ok, buf = cv2.imencode(".jpg", road_scene_with_plate(rng)[0], [cv2.IMWRITE_JPEG_QUALITY, 90])
        if not ok:
            raise RuntimeError("cv2 could not encode a plate scene")
        out.append(bytes(buf))
    return out


class Feed:
    """Produces frames and PM2.5 series; remembers where each frame landed (partition, offset)."""

    def __init__(self, s: Settings, jpegs: list[bytes]) -> None:
        """A producer on the settings' raw topics."""
        self.s, self.jpegs = s, jpegs
        self.producer = Producer({**s.kafka.client_config(), "linger.ms": 5, "message.max.bytes": 8 << 20})
        self.frames: dict[tuple[int, int], tuple[str, int]] = {}  # (partition, offset) -> (event id, jpeg)
        self.devices: list[str] = []
        self.seq = 0
        self.failed = 0

    def _next(self) -> int:
        self.seq += 1
        return self.seq

    def frame(self, jpeg: int | None = None) -> None:
        """One frame of the ``jpeg``-th image (round robin when None) from one of the cameras."""
        seq = self._next()
        index = seq % len(self.jpegs) if jpeg is None else jpeg
        data, camera, event_id = self.jpegs[index], f"cam-{seq % CAMERAS}", fast_event_id(GATEWAY, "frame", seq)

        def delivered(err: Any, msg: Any) -> None:
            if err is not None:
                self.failed += 1
            else:
                self.frames[(msg.partition(), msg.offset())] = (event_id, index)

        headers = messages.frame_props(GATEWAY, camera, seq, len(data), 1280, 720)
        self.producer.produce(self.s.kafka.topic(RAW_FRAMES), data, camera.encode(), headers=headers,
                              on_delivery=delivered)
        self.producer.poll(0)

    def series(self, readings: int = 3 * len(PM25)) -> str:
        """A new sensor's PM2.5 series (clean, an episode over the alert threshold, clean): its device id."""
        device = f"pm-{len(self.devices)}"
        self.devices.append(device)
        for k in range(readings):
            seq = self._next()
            value = PM25[k // 3] + (-1.0, 0.5, 1.0)[k % 3]
            at = (T0 + timedelta(seconds=20 * k + 5)).isoformat().replace("+00:00", "Z")
            doc = {"event_id": fast_event_id(GATEWAY, "reading", seq), "schema_version": 1, "tenant": messages.TENANT,
                   "gateway_id": GATEWAY, "device_id": device, "seq": seq, "captured_at": at, "district": "",
                   "kind": "sensor_reading", "metric": "pm25_ug_m3", "value": value}
            self.producer.produce(self.s.kafka.topic(RAW_READINGS), orjson.dumps(doc), device.encode())
            self.producer.poll(0)
        return device

    def flush(self) -> None:
        """Wait until everything produced is in Kafka."""
        if self.producer.flush(60) > 0 or self.failed:
            raise RuntimeError(f"input not delivered to Kafka ({self.failed} failed)")


class Outputs:
    """The worker's output topics read from the beginning: plate reads per frame, alerts per sensor."""

    def __init__(self, s: Settings) -> None:
        """Assign every partition of plate reads, alerts and the DLQ from offset 0."""
        self.s = s
        self.consumer = Consumer({**s.kafka.client_config(), "group.id": f"{s.kafka.topic_prefix}loop-probe",
                                  "enable.auto.commit": False, "fetch.max.bytes": 64 << 20})
        self.tps = []
        for base in (PLATE_READS, ALERTS, DLQ):
            name = s.kafka.topic(base)
            meta = self.consumer.list_topics(name, timeout=10).topics[name]
            self.tps += [TopicPartition(name, p, OFFSET_BEGINNING) for p in meta.partitions]
        self.consumer.assign(self.tps)
        self.position: dict[tuple[str, int], int] = {}
        self.reads: defaultdict[str, set[str]] = defaultdict(set)  # frame event id -> plate read ids
        self.read_copies: Counter[str] = Counter()
        self.alerts: defaultdict[str, set[str]] = defaultdict(set)  # device -> alert ids
        self.dead: list[str] = []

    def sync(self, timeout_s: float = 60.0) -> None:
        """Read until every output partition is read to the end it had when called."""
        ends = {(tp.topic, tp.partition): self.consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in self.tps}
        deadline = time.monotonic() + timeout_s
        while any(self.position.get(k, 0) < e for k, e in ends.items()):
            if time.monotonic() > deadline:
                raise TimeoutError("output topics not read to their end")
            for msg in self.consumer.consume(500, 0.2):
                if msg.error() is None:
                    self._add(msg)

    def _add(self, msg: Any) -> None:
        self.position[(msg.topic(), msg.partition())] = msg.offset() + 1
        doc = orjson.loads(msg.value())
        if msg.topic() == self.s.kafka.topic(PLATE_READS):
            self.reads[doc["source_event_id"]].add(doc["event_id"])
            self.read_copies[doc["event_id"]] += 1
        elif msg.topic() == self.s.kafka.topic(ALERTS):
            self.alerts[doc["device_id"]].add(doc["event_id"])
        else:
            self.dead.append(f"{doc.get('reason')}: {str(doc.get('detail'))[:120]}")

    def duplicates(self) -> int:
        """Plate read records beyond the first copy of each ``event_id``."""
        return sum(n - 1 for n in self.read_copies.values())

    def close(self) -> None:
        """Close the consumer."""
        self.consumer.close()


def committed_and_ends(s: Settings, base_topic: str) -> tuple[dict[int, int], dict[int, int]]:
    """The worker group's committed offsets (-1001 = none) and the end offsets of one input topic."""
    group = Consumer({**s.kafka.client_config(), "group.id": s.kafka.topic(s.worker.app_id)})
    try:
        name = s.kafka.topic(base_topic)
        parts = [TopicPartition(name, p) for p in group.list_topics(name, timeout=10).topics[name].partitions]
        committed = {tp.partition: tp.offset for tp in group.committed(parts, timeout=10)}
        ends = {tp.partition: group.get_watermark_offsets(tp, timeout=10)[1] for tp in parts}
        return committed, ends
    finally:
        group.close()


@dataclass
class Check:
    """What one look at the group's commits and the outputs found."""

    all_committed: bool
    missing: list[str] = field(default_factory=list)  # derived events absent although their input is committed


class Checker:
    """Compares the group's commits with the outputs, against the calibration run's counts."""

    def __init__(self, s: Settings, feed: Feed, outputs: Outputs) -> None:
        """Check ``feed``'s input against ``outputs``."""
        self.s, self.feed, self.outputs = s, feed, outputs
        self.reads_per_jpeg: dict[int, int] = {}
        self.alerts_per_series = 0

    def calibrate(self, frames: dict[tuple[int, int], tuple[str, int]], device: str) -> None:
        """Learn how many plate reads each JPEG gives and how many alerts a series gives."""
        for event_id, jpeg in frames.values():
            self.reads_per_jpeg[jpeg] = len(self.outputs.reads.get(event_id, ()))
        self.alerts_per_series = len(self.outputs.alerts.get(device, ()))
        if not any(self.reads_per_jpeg.values()) or not self.alerts_per_series:
            raise RuntimeError(f"calibration found no plate read or no alert: {self.reads_per_jpeg}, "
                               f"{self.alerts_per_series} alerts; dead letters: {self.outputs.dead[:3]}")

    def look(self) -> Check:
        """Every committed frame has its plate reads; when all input is committed, every series its alerts."""
        self.outputs.sync()
        frames_c, frames_e = committed_and_ends(self.s, RAW_FRAMES)
        readings_c, readings_e = committed_and_ends(self.s, RAW_READINGS)
        done = all(max(frames_c[p], 0) >= e for p, e in frames_e.items()) and all(
            max(readings_c[p], 0) >= e for p, e in readings_e.items())
        missing = []
        for (partition, offset), (event_id, jpeg) in list(self.feed.frames.items()):
            want = self.reads_per_jpeg.get(jpeg)
            if want is not None and offset < frames_c[partition] and len(self.outputs.reads.get(event_id, ())) < want:
                missing.append(f"{RAW_FRAMES}/{partition}@{offset}: {len(self.outputs.reads.get(event_id, ()))} "
                               f"of {want} plate reads")
        if done:
            missing += [f"{d}: {len(self.outputs.alerts.get(d, ()))} of {self.alerts_per_series} alerts"
                        for d in self.feed.devices if len(self.outputs.alerts.get(d, ())) < self.alerts_per_series]
        return Check(done, missing)

    def until_done(self, deadline_s: float, alive: Callable[[], bool]) -> Check:
        """Look every second until all input is committed with its outputs, the deadline passes or a worker exits."""
        deadline = time.monotonic() + deadline_s
        while True:
            check = self.look()
            if (check.all_committed and not check.missing) or time.monotonic() > deadline or not alive():
                return check
            time.sleep(1.0)


class Worker:
    """One ``citystream worker`` process with its own metrics port (and Faust data directory)."""

    def __init__(self, procs: Procs, s: Settings, name: str, instance_id: str) -> None:
        """Settings of worker ``name``; ``instance_id`` '' = dynamic membership."""
        self.procs, self.name, self.port = procs, name, free_port()
        self.s = s.model_copy(update={
            "metrics": s.metrics.model_copy(update={"port": self.port}),
            "worker": s.worker.model_copy(update={"instance_id": instance_id,
                                                  "data_dir": procs.workdir / f"{name}-faust"})})
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the process."""
        self.proc = self.procs.start(self.name, self.s, "worker")

    def alive(self) -> bool:
        """Whether the process runs."""
        return self.proc is not None and self.proc.poll() is None

    def metric(self, name: str) -> float | None:
        """Sum of the samples of one metric, None while /metrics does not answer."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=2) as resp:
                text = resp.read().decode()
        except OSError:
            return None
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))

    def processed(self) -> float:
        """Frames plus readings this process handled so far (0 before /metrics answers)."""
        return (self.metric("citystream_worker_frames_total") or 0.0) + (
            self.metric("citystream_worker_readings_total") or 0.0)

    def wait_ready(self, timeout_s: float) -> bool:
        """Wait until the worker reports ready (partitions assigned, tables recovered)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self.alive():
            if self.metric("citystream_worker_ready") == 1.0:
                return True
            time.sleep(0.25)
        return False

    def stop(self, kill: bool) -> int | None:
        """SIGTERM (exit code expected 0), or SIGKILL of its process group (vision processes too)."""
        assert self.proc is not None
        if kill and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(30)
            return self.proc.returncode
        return self.procs.stop(self.proc, timeout_s=60)


class RebalanceLog:
    """Counts the broker's ``Preparing to rebalance group <group>`` lines written since the last call.

    The broker writes them only when its logger ``org.apache.kafka.coordinator.group.GroupMetadataManager``
    is at INFO; ``seen`` says whether it logged anything about the group at all (its first join does).
    """

    def __init__(self, path: Path, group: str) -> None:
        """Follow the Kafka server log at ``path``."""
        self.path, self.needle, self.group = path, f"Preparing to rebalance group {group} ", f"group {group} "
        self.offset = path.stat().st_size if path.exists() else 0
        self.seen = False

    def since_last(self) -> int | None:
        """Rebalances of the group since the previous call; None when the broker's log is not readable."""
        try:
            with self.path.open("rb") as f:
                f.seek(self.offset)
                data = f.read()
        except OSError:
            return None
        self.offset += len(data)
        text = data.decode(errors="replace")
        self.seen = self.seen or self.group in text
        return text.count(self.needle)
