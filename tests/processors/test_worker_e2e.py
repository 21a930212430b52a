"""``citystream worker`` on the real Kafka: alerts, plates, faces, dead letters, watchlist writes, SIGTERM."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import cv2
import pytest
from confluent_kafka import Consumer, TopicPartition

from citystream.processors.plates.plates import pseudonym
from citystream.processors.plates.synth import road_scene_with_plate
from citystream.processors.watchlists import watchlists
from citystream.schemas.events import DeadLetter
from citystream.schemas.topics import RAW_FRAMES, RAW_READINGS
from citystream.schemas.wire import to_json
from citystream.settings import Settings
from tests.conftest import REPO, write_settings
from tests.processors.worker_helpers import (
    OTHER,
    PLATE_SEED,
    T0,
    TENANT,
    Outputs,
    astronaut_scene,
    entry,
    frame_headers,
    jpeg,
    metric,
    pm25_series,
    produce,
    worker_settings_for,
)


@pytest.fixture
def worker_settings(settings: Settings, tmp_path: Path) -> Settings:
    return worker_settings_for(settings, tmp_path)


@pytest.mark.integration
def test_worker_end_to_end_alerts_plates_faces_dlq_and_sigterm(worker_settings: Settings, tmp_path: Path) -> None:
    from citystream.processors.faces.faces import single_template

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
        assert {r["plate_pseudonym"] for r in reads} == {pseudonym(label.registration, label.province, b"test-key")}
        assert not {"registration", "province"} & {k for r in reads for k in r}, "no plate text leaves the worker"
        assert all(r["watchlist_hit"] and len(r["plate_pseudonym"]) == 64 for r in reads)
        assert len({p for p, _, _ in got["plate.reads"]}) == 1 and {k for _, _, k in got["plate.reads"]} == {b"cam-1"}
        plate_alerts = [a for _, a, _ in got["alerts"] if a["alert_type"] == "plate_watchlist"]
        assert len(plate_alerts) == 1 and plate_entry.entry_id in plate_alerts[0]["message"]
        assert label.registration not in plate_alerts[0]["message"], "no plate text in an alert"

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
