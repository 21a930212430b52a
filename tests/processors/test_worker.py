"""The Faust worker: frame batches in a (fake) pool, and ``citystream worker`` end to end on the real Kafka."""

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
from typing import Any

import cv2
import numpy as np
import orjson
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from numpy.typing import NDArray
from prometheus_client import CollectorRegistry

from citystream.processors import watchlists
from citystream.processors.app import FACE_CAMERA_LABELS, WatchCache, WorkerContext, WorkerMetrics, create_app
from citystream.processors.frames_agent import VisionPool, analyse_frame
from citystream.processors.plate_synth import road_scene_with_plate
from citystream.schemas.events import DeadLetter, FrameMeta, Metric, SensorReading, make_event_id
from citystream.schemas.topics import ALERTS, DLQ, FACE_MATCHES, PLATE_READS, RAW_FRAMES, RAW_READINGS
from citystream.schemas.wire import frame_meta_pairs, to_json
from citystream.settings import Settings, dump_settings
from tests.conftest import REPO, free_port, write_settings

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


@pytest.mark.unit
def test_frames_agent_order_dead_letters_faces_and_cooldown(tmp_path: Path) -> None:
    from skimage import data

    from citystream.processors.faces import single_template

    ctx = unit_context(tmp_path)
    scene, label = road_scene_with_plate(random.Random(PLATE_SEED))
    plate_jpeg, face_jpeg = jpeg(scene), jpeg(astronaut_scene())
    person = entry(TENANT, "face", datetime.now(UTC) + timedelta(days=1), label="missing person",
                   embedding=single_template(cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)))
    ctx.watch = WatchCache({person.entry_id.encode(): watchlists.encode(person)})
    items = [(b"cam-1", plate_jpeg, frame_headers(TENANT, "cam-1", seq, plate_jpeg, T0 + timedelta(seconds=seq)))
             for seq in (1, 2, 3)]
    items.insert(1, (b"cam-1", plate_jpeg[:5000], frame_headers(TENANT, "cam-1", 9, plate_jpeg, T0)))
    items.append((b"cam-1", b"", []))
    items += [(b"cam-2", face_jpeg, frame_headers(TENANT, "cam-2", seq, face_jpeg, T0 + timedelta(seconds=seq)))
              for seq in (1, 2)]
    asyncio.run(put_all(ctx, "frames", items, lambda: len(sent(ctx, "face_matches")) == 2))

    reads = sent(ctx, "plate_reads")
    assert [r["seq"] for r in reads] == [1, 2, 3]
    assert {(r["registration"], r["province"], r["watchlist_hit"]) for r in reads} == {
        (label.registration, label.province, False)}
    letters = [(d["reason"], d["tenant"]) for d in sent(ctx, "dlq")]
    assert letters == [("truncated_jpeg", TENANT), ("bad_frame_meta", "")]
    matches = sent(ctx, "face_matches")
    assert [(m["seq"], m["watchlist_entry_id"]) for m in matches] == [(1, person.entry_id), (2, person.entry_id)]
    alerts = sent(ctx, "alerts")  # two sightings 1 s apart on one camera: one alert (cooldown)
    assert [(a["alert_type"], a["device_id"]) for a in alerts] == [("face_watchlist", "cam-2")]
    assert "missing person" in alerts[0]["message"]
    assert ctx.metrics.faces.labels("cam-2")._value.get() >= 2


@pytest.mark.unit
def test_frames_without_a_pseudonym_key_are_dead_lettered(tmp_path: Path) -> None:
    ctx = unit_context(tmp_path, pseudonym_keys={})
    scene, _label = road_scene_with_plate(random.Random(PLATE_SEED))
    body = jpeg(scene)
    asyncio.run(put_all(ctx, "frames", [(b"cam-1", body, frame_headers(TENANT, "cam-1", 1, body, T0))],
                        lambda: sent(ctx, "dlq")))
    assert [d["reason"] for d in sent(ctx, "dlq")] == ["no_pseudonym_key"]
    assert sent(ctx, "plate_reads") == []


@pytest.mark.unit
def test_readings_agent_windows_alerts_and_dead_letters(tmp_path: Path) -> None:
    ctx = unit_context(tmp_path)
    series = pm25_series()
    items = [(b"pm-1", to_json(r), []) for r in series[:12]]
    items.insert(3, (b"pm-1", b"\xff\xfe", []))
    items.insert(5, (b"pm-1", to_json(series[0].model_copy(update={"value": -3.0})), []))
    items += [(b"pm-1", to_json(r), []) for r in series[12:]]
    asyncio.run(put_all(ctx, "readings", items, lambda: len(sent(ctx, "alerts")) == 2 and len(sent(ctx, "dlq")) == 2))
    assert [(a["alert_type"], a["state"]) for a in sent(ctx, "alerts")] == [("pm25_high", "raised"),
                                                                            ("pm25_high", "cleared")]
    assert [d["reason"] for d in sent(ctx, "dlq")] == ["invalid_reading", "out_of_range"]
    assert ctx.metrics.windows._value.get() >= 9


@pytest.mark.unit
def test_a_crashed_vision_pool_is_replaced_and_the_frame_rejected() -> None:
    made: list[Executor] = []

    def factory(n: int) -> Executor:
        made.append(ExplodingExecutor() if not made else ThreadPoolExecutor(n))
        return made[-1]

    pool = VisionPool(1, factory)
    scene, label = road_scene_with_plate(random.Random(PLATE_SEED))
    empty = np.zeros((0, 128), np.float32)
    first = asyncio.run(pool.run(jpeg(scene), 10**8, empty, 0.6, 0))
    second = asyncio.run(pool.run(jpeg(scene), 10**8, empty, 0.6, 0))
    pool.shutdown()
    assert first.rejected is not None and first.rejected[0] == "vision_crashed"
    assert len(made) == 2 and second.rejected is None
    assert [(p[0], p[1]) for p in second.plates] == [(label.registration, label.province)]


@pytest.mark.unit
@pytest.mark.parametrize(("body", "reason"), [
    (b"", "empty_frame"),
    (b"GIF89a....", "not_jpeg"),
    (b"\xff\xd8\xff\xda\x00\x02", "bad_jpeg_header"),
    (b"\xff\xd8\xff\xc0\x00\x11\x08\x00\x00\x04\x00\x03" + b"\x00" * 16 + b"\xff\xd9", "zero_size"),
    (b"\xff\xd8\xff\xc0\x00\x11\x08\x4e\x20\x4e\x20\x03" + b"\x00" * 16 + b"\xff\xd9", "frame_too_large"),
    (b"\xff\xd8\xff\xc0\x00\x11\x08\x00\x10\x00\x10\x03" + b"\x00" * 16, "truncated_jpeg"),
    (b"\xff\xd8\xff\xc0\x00\x11\x08\x00\x10\x00\x10\x03" + b"\x00" * 16 + b"\xff\xd9", "undecodable"),
])
def test_hostile_jpegs_are_rejected_with_a_reason(body: bytes, reason: str) -> None:
    result = analyse_frame(body, 8192 * 8192, np.zeros((0, 128), np.float32), 0.6, 0)
    assert result.rejected is not None and result.rejected[0] == reason
    assert result.plates == [] and result.faces == 0


@pytest.mark.unit
def test_face_count_labels_are_capped() -> None:
    metrics = WorkerMetrics(CollectorRegistry())
    for i in range(FACE_CAMERA_LABELS + 5):
        metrics.count_faces(f"cam-{i}", 1)
    assert metrics.faces.labels("other")._value.get() == 5
    assert metrics.faces.labels("cam-0")._value.get() == 1


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

    def poll_until(self, done: Any, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not done(self.records) and time.monotonic() < deadline:
            msg = self.consumer.poll(0.5)
            if msg is None or msg.error() is not None:
                continue
            self.records[self.names[msg.topic()]].append((msg.partition(), orjson.loads(msg.value()), msg.key()))

    def close(self) -> None:
        self.consumer.close()


@pytest.fixture
def worker_settings(settings: Settings, tmp_path: Path) -> Settings:
    doc = dump_settings(settings)
    doc["worker"].update({"vision_processes": 1, "allowed_lateness_s": 0, "pseudonym_keys": {"*": "test-key"},
                          "data_dir": str(tmp_path / "faust")})
    doc["metrics"].update({"port": free_port()})
    return Settings(**doc)


def produce(settings: Settings, records: list[tuple[str, bytes | None, bytes, list[tuple[str, str]]]]) -> None:
    producer = Producer({**settings.kafka.client_config(), "message.max.bytes": 8 * 1024 * 1024})
    for topic, key, value, headers in records:
        producer.produce(settings.kafka.topic(topic), key=key, value=value, headers=headers)
    assert producer.flush(30) == 0


def metric(port: int, name: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


@pytest.mark.integration
def test_worker_end_to_end_alerts_plates_faces_dlq_and_sigterm(worker_settings: Settings, tmp_path: Path) -> None:
    from citystream.processors.faces import single_template

    s = worker_settings
    scene, label = road_scene_with_plate(random.Random(PLATE_SEED))
    plate_jpeg = jpeg(scene)
    face_jpeg = jpeg(astronaut_scene())
    from skimage import data

    template = single_template(cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR))  # enrolment photo
    now = datetime.now(UTC)
    plate_entry = watchlists.WatchlistEntry.model_validate({
        "entry_id": watchlists.plate_entry_id(TENANT, label.registration, label.province), "tenant": TENANT,
        "kind": "plate", "registration": label.registration, "province": label.province, "label": "stolen pickup",
        "reason": "theft report", "legal_basis": "police request 12/2569", "expires_at": now + timedelta(days=1),
        "created_at": now})
    face_entry = entry(TENANT, "face", now + timedelta(days=1), embedding=template, label="missing person")
    expired = entry(OTHER, "face", now - timedelta(minutes=1), embedding=template, label="expired")
    for e in (plate_entry, face_entry, expired):
        watchlists.publish(s, e)

    good = frame_headers(TENANT, "cam-1", 1, plate_jpeg, T0)
    bad_frames = {
        "truncated_jpeg": (plate_jpeg[: len(plate_jpeg) // 2], good),
        "frame_too_large": (b"\xff\xd8\xff\xc0\x00\x11\x08\x4e\x20\x4e\x20\x03" + b"\x00" * 40 + b"\xff\xd9", good),
        "bad_frame_meta": (plate_jpeg, [("tenant", TENANT)]),
    }
    sof = plate_jpeg.find(b"\xff\xc0")
    zero = bytearray(plate_jpeg)
    zero[sof + 5:sof + 9] = b"\x00\x00\x00\x00"
    bad_frames["zero_size"] = (bytes(zero), good)
    records: list[tuple[str, bytes | None, bytes, list[tuple[str, str]]]] = [
        (RAW_READINGS, b"pm-1", b'{"not": "a reading"', []),
        (RAW_READINGS, b"pm-1", to_json(pm25_series()[0].model_copy(update={"value": 5000.0, "seq": 999})), []),
        *[(RAW_FRAMES, b"cam-9", body, headers) for body, headers in bad_frames.values()],
    ]
    records += [(RAW_READINGS, b"pm-1", to_json(r), []) for r in pm25_series()]
    records += [(RAW_FRAMES, b"cam-1", plate_jpeg, frame_headers(TENANT, "cam-1", seq, plate_jpeg,
                                                                  T0 + timedelta(seconds=seq))) for seq in (1, 2, 3)]
    records.append((RAW_FRAMES, b"cam-2", face_jpeg, frame_headers(TENANT, "cam-2", 1, face_jpeg, T0)))
    records.append((RAW_FRAMES, b"cam-3", face_jpeg, frame_headers(OTHER, "cam-3", 1, face_jpeg, T0)))

    config = write_settings(s, tmp_path / "worker.yaml")
    log_path = tmp_path / "worker.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "citystream", "--config", str(config), "worker"], cwd=REPO,
                                stdout=log, stderr=subprocess.STDOUT)
    outputs = Outputs(s)
    try:
        deadline = time.monotonic() + 60  # Faust re-seeks its partitions once recovery ends: produce after that
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                if metric(s.metrics.port, "citystream_worker_ready") == 1:
                    break
            except OSError:
                pass
            time.sleep(0.3)
        produce(s, records)

        def complete(got: dict[str, list[Any]]) -> bool:
            kinds = [(a["alert_type"], a["state"]) for _, a, _ in got["alerts"]]
            return (len(got["plate.reads"]) >= 3 and len(got["face.matches"]) >= 1 and len(got["dlq"]) >= 6
                    and ("pm25_high", "cleared") in kinds and ("face_watchlist", "raised") in kinds
                    and ("plate_watchlist", "raised") in kinds)

        outputs.poll_until(complete, 150)
        assert proc.poll() is None, log_path.read_text()[-3000:]
        got = outputs.records
        assert complete(got), (dict(got), log_path.read_text()[-3000:])

        # sensor episode: one raise, one clear, in order, Thai AQI in the message
        pm = [a for _, a, _ in got["alerts"] if a["alert_type"].startswith("pm25")]
        assert [(a["alert_type"], a["state"]) for a in pm] == [("pm25_high", "raised"), ("pm25_high", "cleared")]
        assert "AQI" in pm[0]["message"] and pm[0]["device_id"] == "pm-1"

        # plates: the label's text, keyed pseudonym, watchlist hit, per-camera order, one alert per sighting
        reads = [r for _, r, _ in got["plate.reads"]]
        assert [r["seq"] for r in reads] == [1, 2, 3]
        assert {(r["registration"], r["province"]) for r in reads} == {(label.registration, label.province)}
        assert all(r["watchlist_hit"] and len(r["plate_pseudonym"]) == 64 for r in reads)
        assert len({p for p, _, _ in got["plate.reads"]}) == 1 and {k for _, _, k in got["plate.reads"]} == {b"cam-1"}
        plate_alerts = [a for _, a, _ in got["alerts"] if a["alert_type"] == "plate_watchlist"]
        assert len(plate_alerts) == 1 and label.registration in plate_alerts[0]["message"]

        # faces: the active entry matched on cam-2; the other tenant's expired entry did not on cam-3
        matches = [m for _, m, _ in got["face.matches"]]
        assert [(m["device_id"], m["watchlist_entry_id"]) for m in matches] == [("cam-2", face_entry.entry_id)]
        assert matches[0]["distance"] < 0.6

        # malformed input: DLQ records with reason and the original bytes; the worker kept going
        letters = {d.reason: d for d in (DeadLetter.model_validate(doc) for _, doc, _ in got["dlq"])}
        assert letters["invalid_reading"].original_bytes == b'{"not": "a reading"'
        assert letters["invalid_reading"].stage == "worker" and "JSON" in letters["invalid_reading"].detail
        assert "pm25_ug_m3=5000.0" in letters["out_of_range"].detail and letters["out_of_range"].tenant == TENANT
        for reason, (body, _headers) in bad_frames.items():
            assert letters[reason].original_bytes == body, reason
            assert letters[reason].original_topic == s.kafka.topic(RAW_FRAMES)

        assert metric(s.metrics.port, "citystream_worker_frames_total") >= 5
        assert metric(s.metrics.port, 'citystream_worker_dlq_total{reason="truncated_jpeg"}') == 1

        # a watchlist write reaches the running worker: the other tenant's renewed entry now matches on cam-3
        renewed = entry(OTHER, "face", datetime.now(UTC) + timedelta(hours=1), embedding=template, label="renewed")
        watchlists.publish(s, renewed)
        for seq in range(2, 30):
            produce(s, [(RAW_FRAMES, b"cam-3", face_jpeg, frame_headers(OTHER, "cam-3", seq, face_jpeg, T0))])
            outputs.poll_until(lambda got: any(m["device_id"] == "cam-3" for _, m, _ in got["face.matches"]), 2)
            if any(m["device_id"] == "cam-3" for _, m, _ in got["face.matches"]):
                break
        late = [m for _, m, _ in got["face.matches"] if m["device_id"] == "cam-3"]
        assert [m["watchlist_entry_id"] for m in late] == [renewed.entry_id], log_path.read_text()[-3000:]
    finally:
        outputs.close()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert code == 0, log_path.read_text()[-3000:]
    # every input was acknowledged: the worker's group committed up to the end of its input topics
    group = Consumer({**s.kafka.client_config(), "group.id": f"{s.kafka.topic_prefix}{s.worker.app_id}"})
    try:
        for base in (RAW_FRAMES, RAW_READINGS):
            name = s.kafka.topic(base)
            parts = [TopicPartition(name, p) for p in group.list_topics(name, timeout=10).topics[name].partitions]
            committed = {tp.partition: tp.offset for tp in group.committed(parts, timeout=10)}
            ends = {tp.partition: group.get_watermark_offsets(tp, timeout=10)[1] for tp in parts}
            assert {p: max(o, 0) for p, o in committed.items() if ends[p]} == {p: e for p, e in ends.items() if e}
    finally:
        group.close()
