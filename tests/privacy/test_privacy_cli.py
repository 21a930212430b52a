"""Data-subject requests end to end: a plate stored through the sink is found, erased from every table and
its archived frames, both actions are audited; through a running sink and on a store nobody holds."""

from __future__ import annotations

import csv
import getpass
import io
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from pydantic import SecretStr

from citystream.processors.plates.plates import pseudonym
from citystream.schemas import topics
from citystream.schemas.events import Alert, DeadLetter, PlateRead, derived_event_id
from citystream.schemas.wire import frame_meta_pairs, to_json
from citystream.settings import Settings
from tests.conftest import citystream, write_settings
from tests.sinks.factory import TENANT
from tests.sinks.procs import SinkProcess, produce, sink_settings, wait_for
from tests.sinks.test_frames import frame, offsets_of

REGISTRATION, PROVINCE = "1กข 1234", "ปทุมธานี"
OTHER = ("2ขค 567", "กรุงเทพมหานคร")
KEY = "pdpa-test-key-0123456789abcdef"
TABLES = ("plate_reads", "alerts", "frame_index", "dead_letters", "vehicles_1h")


def read(seq: int, alias: str) -> PlateRead:
    """A plate read on frame ``seq`` of cam-01, as the worker builds it."""
    meta, _jpeg = frame(seq)
    return PlateRead(event_id=derived_event_id(meta.event_id, "plate", 0), source_event_id=meta.event_id,
                     plate_pseudonym=alias, confidence=0.93, bbox=(10, 20, 120, 40), watchlist_hit=seq == 1,
                     **meta.model_dump(include={"tenant", "gateway_id", "device_id", "seq", "captured_at", "district"}))


def store_plates(settings: Settings, sink: SinkProcess, ours: str, theirs: str) -> None:
    """Frames 1-3 with one read each (ours on 1 and 2), a watchlist alert, and three dead letters, via Kafka."""
    reads = [read(1, ours), read(2, ours), read(3, theirs)]
    alert = Alert(event_id=derived_event_id(reads[0].event_id, "alert/plate_watchlist", 0),
                  alert_type="plate_watchlist", severity="critical",
                  message="watchlisted plate: stolen pickup (entry e-1) at cam-01",
                  source_event_id=reads[0].event_id, **reads[0].model_dump(
                      include={"tenant", "gateway_id", "device_id", "seq", "captured_at", "district"}))
    meta1, jpeg1 = frame(1)
    letters = [  # a refused read carrying our pseudonym, frame 1 refused later on, and an unrelated letter
        DeadLetter.build(stage="sink", reason="bad_row", detail="x", topic="plate.reads",
                         payload=reads[1].model_dump_json().encode(), tenant=TENANT),
        DeadLetter.build(stage="worker", reason="invalid_output", detail="y", topic="raw.frames", payload=jpeg1,
                         headers=dict(frame_meta_pairs(meta1)), tenant=TENANT),
        DeadLetter.build(stage="bridge", reason="not_json", detail="z", topic="city/a/b/sensor/c/reading",
                         payload=b"{oops", tenant=TENANT),
    ]
    producer = Producer(settings.kafka.client_config())
    for seq in (1, 2, 3):
        meta, jpeg = frame(seq)
        producer.produce(settings.kafka.topic(topics.RAW_FRAMES), value=jpeg, key=b"cam-01",
                         headers=frame_meta_pairs(meta))
    for letter in letters:
        producer.produce(settings.kafka.topic(topics.DLQ), value=to_json(letter), key=TENANT.encode())
    assert producer.flush(30) == 0
    produce(settings, [*reads, alert])
    wait_for("reads, alert and letters stored", lambda: (sink.count("v_plate_reads"), sink.count("v_alerts"),
                                                         sink.count("v_dead_letters")) == (3, 1, 3))
    raw_frames = settings.kafka.topic(topics.RAW_FRAMES)
    group = settings.kafka.topic(settings.worker.app_id)
    worker = Consumer({**settings.kafka.client_config(), "group.id": group, "enable.auto.commit": False})
    worker.commit(offsets=[TopicPartition(raw_frames, p, o) for p, o in offsets_of(settings, group, raw_frames)[1]
                           .items()], asynchronous=False)
    worker.close()
    wait_for("three frames archived", lambda: sink.count("v_frame_index") == 3)


def privacy(config: Path, *args: str) -> Any:
    """``citystream privacy ARGS`` (a subprocess, like an officer's shell); JSON output parsed."""
    res = citystream("privacy", *args, config=config, check=False)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout) if "--json" in args else res.stdout


def plate_args(plate: tuple[str, str]) -> list[str]:
    """--plate/--province of ``plate``."""
    return ["--plate", plate[0], "--province", plate[1]]


def mentions(sink: SinkProcess, alias: str) -> dict[str, int]:
    """Rows of every table of the database (raw tables, rollups, views) whose text holds ``alias``."""
    db = sink.settings.clickhouse.database
    names = [r["name"] for r in sink.rows(f"SELECT name FROM system.tables WHERE database = '{db}' AND "
                                          "engine NOT IN ('MaterializedView', 'View') AND name != 'audit_log'")]
    return {name: int(sink.rows(f"SELECT count() AS n FROM `{db}`.{name} "
                                f"WHERE position(formatRow('TabSeparated', *), '{alias}') > 0")[0]["n"])
            for name in names}


@pytest.mark.integration
def test_a_stored_plate_is_found_erased_everywhere_and_both_actions_are_audited(settings: Settings,
                                                                               tmp_path: Path) -> None:
    frames_dir = tmp_path / "frames"
    keyed = settings.model_copy(update={"worker": settings.worker.model_copy(
        update={"pseudonym_keys": {"*": SecretStr(KEY)}})})
    ours, theirs = pseudonym(REGISTRATION, PROVINCE, KEY.encode()), pseudonym(*OTHER, KEY.encode())
    sink = SinkProcess(sink_settings(keyed, tmp_path, frames_dir=frames_dir), tmp_path / "sink.yaml").start()
    try:
        store_plates(keyed, sink, ours, theirs)
        found = privacy(sink.config, "search", *plate_args((REGISTRATION, PROVINCE)), "--actor", "dpo-somchai",
                        "--reason", "access request 7/2569", "--legal-basis", "PDPA s.30", "--json")
        assert found["pseudonyms"] == [{"tenant": TENANT, "pseudonym": ours}]
        assert found["counts"] == {"plate_reads": 2, "alerts": 1, "frame_index": 2, "dead_letters": 2,
                                   "vehicles_1h": 1}
        assert {r["plate_pseudonym"] for r in found["records"]["plate_reads"]} == {ours}
        assert {r["seq"] for r in found["records"]["frame_index"]} == {1, 2}
        assert {r["reason"] for r in found["records"]["dead_letters"]} == {"bad_row", "invalid_output"}
        exported = list(csv.DictReader(io.StringIO(privacy(sink.config, "search", *plate_args((REGISTRATION,
                                                                                             PROVINCE)), "--csv"))))
        assert len(exported) == 8 and {r["table"] for r in exported} == set(TABLES)
        before = mentions(sink, ours)
        assert before["plate_reads"] == 2 and before["dead_letters"] == 1, before  # the probe below can see it
        files = {row["object_ref"] for row in found["records"]["frame_index"]}
        assert all((frames_dir / ref).is_file() for ref in files)

        erased = privacy(sink.config, "erase", *plate_args((REGISTRATION, PROVINCE)), "--actor", "dpo-somchai",
                         "--reason", "erasure request 8/2569", "--json")
        assert erased["counts"] == found["counts"] and erased["frame_files"] == 2 and not erased["frame_files_missing"]
        assert not any((frames_dir / ref).exists() for ref in files)
        left = mentions(sink, ours)
        assert "plate_reads" in left and "dead_letters" in left and set(left.values()) == {0}, left
        again = privacy(sink.config, "search", *plate_args((REGISTRATION, PROVINCE)), "--json")
        assert again["counts"] == {table: 0 for table in TABLES}
        # the other car is untouched, and the rollup recounted: one read, one vehicle left in that hour
        assert sink.rows("SELECT plate_pseudonym AS p FROM v_plate_reads") == [{"p": theirs}]
        assert sink.rows("SELECT sum(reads) AS r, sum(vehicles) AS v FROM v_vehicles_1h") == [{"r": 1, "v": 1}]
        assert sink.count("v_frame_index") == 1 and sink.count("v_dead_letters") == 1
        assert len([p for p in frames_dir.rglob("*.jpg")]) == 1

        log = privacy(sink.config, "audit", "--json")
        me = getpass.getuser()  # --actor left out: the OS user
        assert [(e["action"], e["actor"]) for e in log] == [
            ("privacy.search", me), ("privacy.erase", "dpo-somchai"), ("privacy.search", me),
            ("privacy.search", "dpo-somchai")]
        search_entry, erase_entry = log[3], log[1]
        assert search_entry["subject"] == erase_entry["subject"] == f"plate:{ours}"
        assert search_entry["reason"] == "access request 7/2569" and search_entry["legal_basis"] == "PDPA s.30"
        assert erase_entry["reason"] == "erasure request 8/2569"
        assert erase_entry["details"] == {"counts": found["counts"], "frame_files": 2, "frame_files_missing": 0}
        assert REGISTRATION not in json.dumps(log, ensure_ascii=False)
        assert sink.terminate() == 0
    finally:
        sink.kill()

    # No sink now: the commands open the store themselves. Without a key nothing can be linked: usage error.
    keyless = sink.settings.model_copy(update={"worker": sink.settings.worker.model_copy(
        update={"pseudonym_keys": {}})})
    res = citystream("privacy", "search", *plate_args(OTHER), config=write_settings(keyless, tmp_path / "nokey.yaml"),
                     check=False)
    assert res.returncode == 2 and "no pseudonym key" in res.stderr, res.stderr
    erased = privacy(sink.config, "erase", *plate_args(OTHER), "--reason", "erasure request 9/2569", "--json")
    assert erased["counts"]["plate_reads"] == 1 and erased["frame_files"] == 1
    log = privacy(sink.config, "audit", "--json", "--limit", "2")
    assert [e["action"] for e in log] == ["privacy.erase", "privacy.search"]
    assert datetime.fromisoformat(log[0]["at"]) <= datetime.now(UTC)


@pytest.mark.integration
def test_a_request_on_an_unreachable_store_fails_with_its_reason_and_says_the_audit_failed(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"clickhouse: {{dsn: 'chdb://{tmp_path / 'none'}'}}\nworker: {{pseudonym_keys: {{'*': k}}}}\n")
    for args in (["search"], ["erase", "--reason", "request 1/2569"]):
        res = citystream("privacy", *args, *plate_args(OTHER), config=cfg, check=False)
        assert res.returncode == 1, res.stderr
        assert "no embedded store" in res.stderr and "audit entry of the failed" in res.stderr
    res = citystream("privacy", "erase", *plate_args(OTHER), config=cfg, check=False)
    assert res.returncode == 2 and "--reason" in res.stderr  # bad usage before anything is touched
    assert not (tmp_path / "none").exists()
