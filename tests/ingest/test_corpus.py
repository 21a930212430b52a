"""The generated malformed corpus (tests/ingest/corpus.py, >= 1000 items) against every stage's checks.

Unit: each bad item is rejected by the stage that must reject it, with its reason, and by no earlier
one; every valid item passes the bridge (and frames decode). Readings/statuses the contract refuses
would also be poison at the sink, so nothing bad can become a row even if it reached Kafka another way.
Integration: the same corpus (a smaller share of valid traffic) through Mosquitto -> bridge -> Kafka ->
worker -> sink -> ClickHouse, all real processes: one dead letter per bad item, no bad item stored,
every valid item stored once, no stage exits.
"""

from __future__ import annotations

import base64
import hashlib
import os
import time
from collections import Counter
from pathlib import Path

import pytest

from citystream.demo import Pipeline, probe_bridge
from citystream.ingest.bridge.validate import Accepted, Rejected, Validator
from citystream.processors.vision import FrameRejected, decode
from citystream.schemas import topics
from citystream.schemas.ranges import RANGES
from citystream.schemas.strict import frame_meta_strict
from citystream.settings import Settings
from citystream.settings.bridge import BridgeSettings
from citystream.sinks.rows import ROUTES, PoisonRecord, to_row
from tests.conftest import write_settings
from tests.ingest import malformed as mf
from tests.ingest.corpus import Corpus, generate
from tests.processors.worker_helpers import worker_settings_for
from tests.sinks.procs import query

# CITYSTREAM_CORPUS_SEED runs another (held-out) corpus of the same shape through the real stack.
STACK_SEED = int(os.environ.get("CITYSTREAM_CORPUS_SEED", "3"))
LIMITS = BridgeSettings(max_reading_bytes=16 * 1024, max_frame_bytes=64 * 1024)
BUDGET = 8192 * 8192
CONTRACT_REASONS = {"not_json", "non_finite", "duplicate_key", "out_of_range", "schema"}


def _decode_frame(msg: mf.Msg) -> None:
    meta = frame_meta_strict(msg.props)
    decode(msg.payload, BUDGET, (meta.width, meta.height))


@pytest.mark.unit
@pytest.mark.parametrize("seed", [1, 2])
def test_every_generated_bad_item_is_rejected_by_its_stage_with_its_reason(seed: int) -> None:
    corpus = generate("city", seed, max_reading=LIMITS.max_reading_bytes, max_frame=LIMITS.max_frame_bytes)
    assert len(corpus.bad) >= 1000 and len(set(m.payload for m in corpus.bad)) == len(corpus.bad)
    validator = Validator(LIMITS, "city")
    wrong: list[str] = []
    for msg in corpus.bad:
        result = validator.check(msg.topic, msg.payload, msg.props)
        if corpus.stage(msg) == "bridge":
            if not isinstance(result, Rejected) or result.reason != msg.reason:
                wrong.append(f"{msg.reason}: bridge gave {result} for {msg.payload[:120]!r} {msg.props}")
            elif msg.reason in CONTRACT_REASONS and msg.topic.endswith(("/reading", "/status")):
                route = ROUTES[topics.RAW_READINGS if msg.topic.endswith("/reading") else topics.DEVICE_STATUS]
                with pytest.raises(PoisonRecord):  # the sink holds the same contract
                    to_row(route, msg.payload)
            continue
        if not isinstance(result, Accepted):
            wrong.append(f"{msg.reason}: expected to pass the bridge, got {result}")
            continue
        try:
            _decode_frame(msg)
            wrong.append(f"{msg.reason}: the worker decoded it")
        except FrameRejected as exc:
            if exc.reason != msg.reason:
                wrong.append(f"{msg.reason}: worker said {exc.reason} {exc.detail}")
    assert not wrong, f"{len(wrong)} of {len(corpus.bad)} mishandled:\n" + "\n".join(wrong[:20])
    for msg in corpus.valid:
        assert isinstance(validator.check(msg.topic, msg.payload, msg.props), Accepted), msg
        if msg.topic.endswith("/frame"):
            _decode_frame(msg)


# --- the real stack -------------------------------------------------------------------------------------
def _stack_settings(settings: Settings, tmp_path: Path) -> Path:
    own = worker_settings_for(settings, tmp_path)
    own.bridge.max_frame_bytes = LIMITS.max_frame_bytes
    own.clickhouse.dsn = f"chdb://{tmp_path / 'clickhouse'}"
    own.sink.frames_dir = tmp_path / "frames"
    return write_settings(own, tmp_path / "citystream.yaml")


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _wait_rows(config: Path, pipeline: Pipeline, sql: str, want: int, timeout_s: float) -> int:
    deadline, got = time.monotonic() + timeout_s, -1
    while time.monotonic() < deadline:
        pipeline.check_alive()
        if (config.parent / "clickhouse" / "citystream-owner.json").exists():
            got = int(query(config, sql)[0]["n"])
            if got >= want:
                return got
        time.sleep(1.0)
    return got


def _publish(settings: Settings, corpus: Corpus) -> None:
    client = mf.gateway_client(settings)
    try:
        for i in range(0, len(corpus.order), 200):
            mf.publish_all(client, corpus.order[i:i + 200], timeout_s=120)
    finally:
        client.loop_stop()
        client.disconnect()


@pytest.mark.e2e
def test_the_corpus_through_the_real_stack(settings: Settings, tmp_path: Path) -> None:
    root = settings.mqtt.topic_root
    corpus = generate(root, STACK_SEED, max_reading=settings.bridge.max_reading_bytes, max_frame=LIMITS.max_frame_bytes,
                      max_clock_skew_s=settings.bridge.max_clock_skew_s, valid_readings=60, valid_frames=10,
                      valid_statuses=5)
    config = _stack_settings(settings, tmp_path)
    pipeline = Pipeline()
    try:
        pipeline.start("sink", config, tmp_path)
        pipeline.start("worker", config, tmp_path)
        pipeline.start("bridge", config, tmp_path)
        probe_bridge(settings, pipeline, 90)
        _publish(settings, corpus)
        n_bad = len(corpus.bad)
        got = _wait_rows(config, pipeline, "SELECT count() AS n FROM dead_letters FINAL", n_bad, 240)
        assert got >= n_bad, f"{got} dead letters for {n_bad} bad items"
        readings = [m for m in corpus.valid if m.topic.endswith("/reading")]
        _wait_rows(config, pipeline, "SELECT count() AS n FROM v_sensor_readings", len(readings), 120)
        time.sleep(5)  # anything late or doubled would show up now
        letters = query(config, "SELECT stage, reason, detail, original_topic, base64Encode(original_bytes) AS b64 "
                                "FROM dead_letters FINAL")
        stored_ids = {r["event_id"] for r in query(config, "SELECT event_id FROM sensor_readings FINAL")}
        statuses = query(config, "SELECT event_id, state, gateway_id FROM device_status FINAL")
        view = query(config, "SELECT count() AS n FROM v_sensor_readings")[0]["n"]
        rollups = [query(config, f"SELECT metric, sum(readings) AS n, min(min_value) AS lo, max(max_value) AS hi "
                                 f"FROM {name} GROUP BY metric") for name in ("v_sensor_1m", "v_sensor_1h")]
        pipeline.check_alive()
    finally:
        codes = pipeline.stop()
    by_bytes = Counter(_sha(base64.b64decode(d["b64"])) for d in letters)
    seen = {(_sha(base64.b64decode(d["b64"]))): d for d in letters}
    wrong = []
    for msg in corpus.bad:
        key = _sha(msg.payload)
        letter = seen.get(key)
        if by_bytes[key] != 1 or letter is None or letter["reason"] != msg.reason or not letter["detail"] \
                or letter["stage"] != corpus.stage(msg):
            wrong.append(f"{msg.reason}/{corpus.stage(msg)}: {by_bytes[key]} letters, {letter and letter['reason']}")
    assert not wrong, f"{len(wrong)} of {len(corpus.bad)}:\n" + "\n".join(wrong[:20])
    assert len(letters) == len(corpus.bad), "dead letters for valid traffic"
    assert stored_ids == {m.event_id for m in readings}, "sensor_readings holds exactly the valid readings"
    assert view == len(readings)
    for rollup in rollups:  # no bad value in any rollup: each metric's extremes lie in its range
        assert sum(int(r["n"]) for r in rollup) == len(readings)
        assert all(RANGES[r["metric"]].low <= r["lo"] <= r["hi"] <= RANGES[r["metric"]].high for r in rollup)
    valid_status = {m.event_id for m in corpus.valid if m.topic.endswith("/status")}
    ours = {s["event_id"] for s in statuses if s["gateway_id"] == mf.GATEWAY}
    assert ours == valid_status and all(s["state"] != "gap" for s in statuses)
    assert codes == {"sink": 0, "worker": 0, "bridge": 0}
    print(f"corpus: {len(corpus.bad)} bad -> {len(letters)} dead letters "
          f"({Counter(d['stage'] for d in letters)}), {len(stored_ids)} readings stored of {len(readings)} valid")
