"""Watchlists: the matching index, expiry, and the ``citystream watchlist`` / ``faces match`` CLI on the real Kafka."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click
import cv2
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from skimage import data

from citystream.processors.watchlists import watchlists
from citystream.processors.watchlists.cli import parse_expiry
from citystream.schemas.topics import WATCHLISTS
from citystream.settings import Settings
from tests.conftest import citystream, write_settings

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
TENANT = "nakhon-rangsit"


def plate(registration: str, province: str = "", tenant: str = TENANT, expires: datetime = NOW + timedelta(days=1),
          ) -> watchlists.WatchlistEntry:
    return watchlists.WatchlistEntry(
        entry_id=watchlists.plate_entry_id(tenant, registration, province), tenant=tenant, kind="plate",
        registration=registration, province=province, reason="stolen", legal_basis="police request",
        expires_at=expires, created_at=NOW)


def face(value: float, tenant: str = TENANT, expires: datetime = NOW + timedelta(days=1)) -> watchlists.WatchlistEntry:
    return watchlists.WatchlistEntry(
        entry_id=watchlists.new_face_entry_id(), tenant=tenant, kind="face", embedding=(value,) * 128,
        reason="missing person", legal_basis="court order", expires_at=expires, created_at=NOW)


@pytest.mark.unit
def test_plate_matching_normalises_text_honours_province_tenant_and_expiry() -> None:
    bangkok = plate("1กข 1234", "กรุงเทพมหานคร")
    anywhere = plate("กข 99")
    expired = plate("2ขค 5", expires=NOW - timedelta(seconds=1))
    other = plate("3คง 7", tenant="pathum-thani-pao")
    index = watchlists.WatchlistIndex.build(
        [watchlists.encode(e) for e in (bangkok, anywhere, expired, other)] + [None, b"{broken"])
    assert index.invalid == 1
    assert index.match_plate(TENANT, "1กข1234", "กรุงเทพ มหานคร", NOW) == bangkok
    assert index.match_plate(TENANT, "1กข 1234", "นนทบุรี", NOW) is None
    assert index.match_plate(TENANT, "กข 99", "ชลบุรี", NOW) == anywhere
    assert index.match_plate(TENANT, "2ขค 5", "", NOW) is None
    assert index.match_plate(TENANT, "3คง 7", "", NOW) is None
    assert index.match_plate("pathum-thani-pao", "3คง 7", "", NOW) == other
    assert index.match_plate(TENANT, "1กข 1234", "กรุงเทพมหานคร", bangkok.expires_at) is None


@pytest.mark.unit
def test_face_templates_are_the_tenants_active_entries() -> None:
    active, expired, other = face(0.1), face(0.2, expires=NOW), face(0.3, tenant="pathum-thani-pao")
    index = watchlists.WatchlistIndex.build(watchlists.encode(e) for e in (active, expired, other))
    entries, templates = index.face_templates(TENANT, NOW)
    assert entries == [active] and templates.shape == (1, 128) and templates.dtype.name == "float32"
    assert templates[0, 0] == pytest.approx(0.1)
    entries, templates = index.face_templates("nobody", NOW)
    assert entries == [] and templates.shape == (0, 128)
    listed = watchlists.active_entries({e.entry_id: watchlists.encode(e) for e in (active, expired, other)}, NOW)
    assert listed == [active, other]


@pytest.mark.unit
def test_plate_entry_ids_are_stable_across_spacing() -> None:
    assert watchlists.plate_entry_id(TENANT, "1กข 1234", "ตาก") == watchlists.plate_entry_id(TENANT, " 1กข1234", "ตาก ")
    assert watchlists.plate_entry_id(TENANT, "1กข 1234", "ตาก") != watchlists.plate_entry_id(TENANT, "1กข 1234", "")


@pytest.mark.unit
def test_parse_expiry() -> None:
    assert parse_expiry("30d", NOW) == NOW + timedelta(days=30)
    assert parse_expiry("12h", NOW) == NOW + timedelta(hours=12)
    assert parse_expiry("2w", NOW) == NOW + timedelta(weeks=2)
    assert parse_expiry("2026-12-31T23:59:00+07:00", NOW) == datetime(2026, 12, 31, 16, 59, tzinfo=UTC)
    for bad in ("tomorrow", "2026-12-31T23:59:00", "5m"):
        with pytest.raises(click.BadParameter):
            parse_expiry(bad, NOW)


def run_json(*args: str, config: Path) -> list[dict[str, Any]]:
    res = citystream(*args, "--json", config=config)
    return [json.loads(line) for line in res.stdout.splitlines() if line.strip()]


@pytest.mark.integration
def test_watchlist_cli_add_list_match_remove_on_kafka(settings: Settings, tmp_path: Path) -> None:
    config = write_settings(settings, tmp_path / "cli.yaml")
    photo = tmp_path / "astronaut.png"
    cv2.imwrite(str(photo), cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR))
    empty = tmp_path / "wall.png"
    cv2.imwrite(str(empty), cv2.cvtColor(data.brick(), cv2.COLOR_GRAY2BGR))
    common = ("--tenant", TENANT, "--reason", "stolen pickup", "--legal-basis", "police request 12/2569")

    [added] = run_json("watchlist", "add-plate", "1กข 1234", "--province", "กรุงเทพมหานคร", *common, "--expires", "30d",
                       "--label", "stolen pickup", config=config)
    assert added["registration"] == "1กข 1234" and added["legal_basis"] == "police request 12/2569"
    [old] = run_json("watchlist", "add-plate", "2ขค 5", *common, "--expires", "2020-01-01T00:00:00+07:00",
                     config=config)
    [person] = run_json("watchlist", "add-face", str(photo), *common, "--expires", "12h", "--label", "missing person",
                        config=config)
    assert person["has_template"] is True and "embedding" not in person
    no_face = citystream("watchlist", "add-face", str(empty), *common, "--expires", "1d", config=config, check=False)
    assert no_face.returncode == 1 and "exactly one face" in no_face.stderr
    bad = citystream("watchlist", "add-plate", "1กข 1", *common, "--expires", "soon", config=config, check=False)
    assert bad.returncode == 2

    listed = run_json("watchlist", "list", config=config)
    assert {e["entry_id"] for e in listed} == {added["entry_id"], person["entry_id"]}
    every = run_json("watchlist", "list", "--all", config=config)
    assert {e["entry_id"]: e["active"] for e in every}[old["entry_id"]] is False

    [result] = run_json("faces", "match", str(photo), "--tenant", TENANT, config=config)
    assert result["faces"] == 1 and [m["entry_id"] for m in result["matches"]] == [person["entry_id"]]
    assert result["matches"][0]["label"] == "missing person" and result["matches"][0]["distance"] < 0.1

    citystream("watchlist", "remove", person["entry_id"], "--reason", "found", config=config)
    assert {e["entry_id"] for e in run_json("watchlist", "list", config=config)} == {added["entry_id"]}
    [after] = run_json("faces", "match", str(photo), "--tenant", TENANT, config=config)
    assert after["faces"] == 1 and after["matches"] == []

    # the compacted topic holds entries keyed by id and a tombstone for the removed one
    consumer = Consumer({**settings.kafka.client_config(), "group.id": f"{settings.kafka.topic_prefix}probe"})
    topic = settings.kafka.topic(WATCHLISTS)
    consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    records = []
    while len(records) < 4:
        msg = consumer.poll(10)
        assert msg is not None, records
        records.append((msg.key().decode(), msg.value()))
    consumer.close()
    assert records[-1] == (person["entry_id"], None)
    assert [k for k, _ in records[:3]] == [added["entry_id"], old["entry_id"], person["entry_id"]]
