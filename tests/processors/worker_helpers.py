"""Shared helpers of the worker tests: frames, readings, a unit WorkerContext, and a real ``citystream worker``."""

from __future__ import annotations

import asyncio
import random
import signal
import subprocess
import sys
import time
import urllib.request
from collections import defaultdict
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

import cv2
import numpy as np
import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from numpy.typing import NDArray
from prometheus_client import CollectorRegistry

from citystream.bench.worker_io import committed_and_ends as committed_and_ends  # one copy, shared with the bench
from citystream.processors.app import WorkerContext, create_app
from citystream.processors.frames_agent import VisionPool
from citystream.processors.plates.synth import road_scene_with_plate
from citystream.processors.watchlists import watchlists
from citystream.schemas.events import FrameMeta, Metric, SensorReading, make_event_id
from citystream.schemas.topics import ALERTS, DLQ, FACE_MATCHES, PLATE_READS, RAW_FRAMES
from citystream.schemas.wire import frame_meta_pairs
from citystream.settings import Settings, dump_settings
from tests.conftest import REPO, free_port, write_settings

Record = tuple[str, bytes | None, bytes, list[tuple[str, str]]]

TENANT = "nakhon-rangsit"
OTHER = "pathum-thani-pao"
GATEWAY = "gw-worker-1"
T0 = datetime(2026, 1, 15, 6, 0, tzinfo=UTC)
PLATE_SEED = 777


def jpeg(bgr: NDArray[np.uint8], quality: int = 90) -> bytes:
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return bytes(buf.tobytes())


def astronaut_scene() -> NDArray[np.uint8]:
    """A 1280x720 frame with scikit-image's astronaut (one face) on a grey wall."""
    from skimage import data

    frame = np.full((720, 1280, 3), 128, np.uint8)
    frame[100:612, 600:1112] = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)
    return frame


def frame_headers(tenant: str, camera: str, seq: int, body: bytes, at: datetime) -> list[tuple[str, str]]:
    meta = FrameMeta(event_id=make_event_id(f"{GATEWAY}-{tenant}", "frame", seq), tenant=tenant, gateway_id=GATEWAY,
                     device_id=camera, seq=seq, captured_at=at, width=1280, height=720, jpeg_bytes=max(1, len(body)),
                     motion_score=0.5, district="รังสิต")
    return frame_meta_pairs(meta)


def pm25_series() -> list[SensorReading]:
    """Clean air, a 4-minute episode around 50 µg/m³, clean again: one reading every 20 s."""
    profile = [10.0] * 3 + [48.0, 52.0, 55.0, 50.0] + [10.0] * 4
    out = []
    for minute, value in enumerate(profile):
        for k in range(3):
            seq = minute * 3 + k
            out.append(SensorReading(event_id=make_event_id(GATEWAY, "reading", seq), tenant=TENANT,
                                     gateway_id=GATEWAY, device_id="pm-1", seq=seq,
                                     captured_at=T0 + timedelta(seconds=60 * minute + 20 * k + 5),
                                     metric=Metric.PM25, value=value + (-1.0, 0.5, 1.0)[k], district="รังสิต"))
    return out


def entry(tenant: str, kind: str, expires: datetime, **fields: Any) -> watchlists.WatchlistEntry:
    return watchlists.WatchlistEntry.model_validate({
        "entry_id": watchlists.new_face_entry_id(), "tenant": tenant, "kind": kind, "reason": "test",
        "legal_basis": "court order 1/2569", "expires_at": expires, "created_at": datetime.now(UTC), **fields})


class FakeTopic:
    """Collects what the worker sends (unit tests only; integration tests read Kafka)."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, dict[str, Any]]] = []

    async def send(self, key: bytes, value: bytes) -> None:
        self.sent.append((key, orjson.loads(value)))


class ExplodingExecutor(Executor):
    """An executor whose every task dies as if its process had crashed."""

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        future.set_exception(BrokenProcessPool("killed"))
        return future


def unit_context(tmp_path: Path, pool: VisionPool | None = None, **worker: Any) -> WorkerContext:
    settings = Settings(kafka={"topic_prefix": "unit."}, stack={"home": str(tmp_path)},
                        worker={"allowed_lateness_s": 0, "pseudonym_keys": {TENANT: "k"}, **worker})
    ctx = create_app(settings, CollectorRegistry(), pool=pool or VisionPool(1, lambda n: ThreadPoolExecutor(n)))
    ctx.topics = {name: FakeTopic() for name in ctx.topics}
    return ctx


def sent(ctx: WorkerContext, name: str) -> list[dict[str, Any]]:
    topic = ctx.topics[name]
    assert isinstance(topic, FakeTopic)
    return [doc for _, doc in topic.sent]


async def put_all(ctx: WorkerContext, agent_name: str, items: list[tuple[bytes, bytes, list[tuple[str, str]]]],
                  expected: Any) -> None:
    agent = ctx.app.agents[agent_name]
    async with agent.test_context() as running:
        for key, value, headers in items:
            await running.put(value, key=key, headers=headers, wait=False)
        for _ in range(600):
            if expected():
                break
            await asyncio.sleep(0.02)
    await ctx.app.producer.stop()


class Outputs:
    """Reads the worker's output topics from the beginning."""

    def __init__(self, settings: Settings) -> None:
        self.names = {settings.kafka.topic(t): t for t in (PLATE_READS, FACE_MATCHES, ALERTS, DLQ)}
        self.consumer = Consumer({**settings.kafka.client_config(), "group.id": f"{settings.kafka.topic_prefix}probe",
                                  "enable.auto.commit": False})
        parts = []
        for name in self.names:
            meta = self.consumer.list_topics(name, timeout=10).topics[name]
            parts += [TopicPartition(name, p, OFFSET_BEGINNING) for p in meta.partitions]
        self.consumer.assign(parts)
        self.records: dict[str, list[tuple[int, dict[str, Any], bytes]]] = defaultdict(list)
        self.positions: dict[tuple[str, int], int] = {}
        self.parts = parts

    def poll_until(self, done: Any, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not done(self.records) and time.monotonic() < deadline:
            msg = self.consumer.poll(0.5)
            if msg is None or msg.error() is not None:
                continue
            self.positions[(msg.topic(), msg.partition())] = msg.offset() + 1
            self.records[self.names[msg.topic()]].append((msg.partition(), orjson.loads(msg.value()), msg.key()))

    def read_to_end(self, timeout_s: float = 60) -> None:
        """Read every output partition up to the end it has now."""
        ends = {(tp.topic, tp.partition): self.consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in self.parts}
        self.poll_until(lambda _: all(self.positions.get(k, 0) >= e for k, e in ends.items()), timeout_s)
        assert all(self.positions.get(k, 0) >= e for k, e in ends.items()), "outputs not read to their end"

    def close(self) -> None:
        self.consumer.close()


def worker_settings_for(settings: Settings, tmp_path: Path) -> Settings:
    """The test's settings with one vision process, a pseudonym key, its own Faust data dir, a metrics port and a
    short stall timeout (a worker that stalls in a test exits 3 instead of 0)."""
    doc = dump_settings(settings)
    doc["worker"].update({"vision_processes": 1, "allowed_lateness_s": 0, "pseudonym_keys": {"*": "test-key"},
                          "data_dir": str(tmp_path / "faust"), "stall_timeout_s": 30.0})  # tests check exit 0
    doc["metrics"].update({"port": free_port()})
    return Settings(**doc)


def plate_frames(first_seq: int, count: int) -> list[Record]:
    """``count`` simulator frames with a plate over four cameras (several partitions), seq from ``first_seq``."""
    rng = random.Random(PLATE_SEED + first_seq)
    records: list[Record] = []
    for seq in range(first_seq, first_seq + count):
        body = jpeg(road_scene_with_plate(rng)[0])
        camera = f"cam-{seq % 4}"
        records.append((RAW_FRAMES, camera.encode(), body,
                        frame_headers(TENANT, camera, seq, body, T0 + timedelta(seconds=seq))))
    return records


def produce(settings: Settings, records: list[Record]) -> None:
    """Produce records (base topic, key, value, headers) to the test's topics and wait for them."""
    producer = Producer({**settings.kafka.client_config(), "message.max.bytes": 8 * 1024 * 1024})
    for topic, key, value, headers in records:
        producer.produce(settings.kafka.topic(topic), key=key, value=value, headers=headers)
    assert producer.flush(30) == 0


def produce_at(settings: Settings, records: list[Record]) -> list[tuple[int, int]]:
    """Produce records like :func:`produce`; returns each one's (partition, offset)."""
    producer = Producer({**settings.kafka.client_config(), "message.max.bytes": 8 * 1024 * 1024})
    where: dict[int, tuple[int, int]] = {}
    for i, (topic, key, value, headers) in enumerate(records):
        producer.produce(settings.kafka.topic(topic), key=key, value=value, headers=headers,
                         on_delivery=lambda err, msg, i=i: where.__setitem__(i, (msg.partition(), msg.offset())))
    assert producer.flush(30) == 0 and len(where) == len(records)
    return [where[i] for i in range(len(records))]


def metric(port: int, name: str) -> float:
    """Sum of the worker's samples whose line starts with ``name`` (labels included in ``name`` narrow it)."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))



def metric_or_none(port: int, name: str) -> float | None:
    """The metric's value, None while the worker's /metrics endpoint is not up."""
    try:
        return metric(port, name)
    except OSError:
        return None


def start_worker(settings: Settings, config: Path, log: IO[bytes],
                 command: tuple[str, ...] = (sys.executable, "-m", "citystream")) -> subprocess.Popen[bytes]:
    """Write ``settings`` to ``config`` and start ``citystream worker`` with it, output to ``log``."""
    write_settings(settings, config)
    return subprocess.Popen([*command, "--config", str(config), "worker"], cwd=REPO, stdout=log,
                            stderr=subprocess.STDOUT)


def wait_for_metric(proc: subprocess.Popen[bytes], port: int, name: str, at_least: float, timeout_s: float) -> float:
    """Poll a worker metric until it reaches ``at_least``, the worker exits or ``timeout_s`` passes; its last value."""
    deadline = time.monotonic() + timeout_s
    value = metric_or_none(port, name) or 0.0
    while value < at_least and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.3)
        value = metric_or_none(port, name) or value
    return value


def stop_worker(proc: subprocess.Popen[bytes], timeout_s: float = 60) -> int:
    """SIGTERM the worker and wait for its exit code (SIGKILL and raise when it does not stop)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise


def all_committed(committed: dict[int, int], ends: dict[int, int]) -> bool:
    """Whether the group committed the end of every non-empty partition (see ``committed_and_ends``)."""
    return {p: max(o, 0) for p, o in committed.items() if ends[p]} == {p: e for p, e in ends.items() if e}
