"""The frames agent in a unit WorkerContext: order, dead letters, faces, cooldown, a crashed pool, hostile JPEGs."""

from __future__ import annotations

import asyncio
import random
from concurrent.futures import Executor, ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import cv2
import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from citystream.processors.app import FACE_CAMERA_LABELS, WatchCache, WorkerMetrics
from citystream.processors.frames_agent import VisionPool, analyse_frame
from citystream.processors.plates.plates import pseudonym
from citystream.processors.plates.synth import road_scene_with_plate
from citystream.processors.watchlists import watchlists
from tests.processors.worker_helpers import (
    PLATE_SEED,
    T0,
    TENANT,
    ExplodingExecutor,
    astronaut_scene,
    entry,
    frame_headers,
    jpeg,
    put_all,
    sent,
    unit_context,
)


@pytest.mark.unit
def test_frames_agent_order_dead_letters_faces_and_cooldown(tmp_path: Path) -> None:
    from skimage import data

    from citystream.processors.faces.faces import single_template

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
    assert {(r["plate_pseudonym"], r["watchlist_hit"]) for r in reads} == {
        (pseudonym(label.registration, label.province, b"k"), False)}
    assert not {"registration", "province"} & set(reads[0]), "no plate text leaves the worker"
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



@pytest.mark.unit
def test_key_rotation_gives_new_pseudonyms_per_tenant_and_keeps_the_watchlist_working(tmp_path: Path) -> None:
    """docs/PRIVACY.md, key rotation: after a new key the same plate gets a new pseudonym (no link to the old
    rows), another tenant's key is untouched, and watchlist matching (on the text, in memory) still alerts."""
    scene, label = road_scene_with_plate(random.Random(PLATE_SEED))
    body = jpeg(scene)
    plate_entry = watchlists.WatchlistEntry(
        entry_id=watchlists.plate_entry_id(TENANT, label.registration, label.province), tenant=TENANT, kind="plate",
        label="stolen pickup", registration=label.registration, province=label.province, reason="theft report",
        legal_basis="police request", expires_at=datetime.now(UTC) + timedelta(days=1), created_at=T0)
    got: dict[str, tuple[str, str]] = {}
    rotation = {"before": {TENANT: "key-2026-a", "*": "other"}, "after": {TENANT: "key-2026-b", "*": "other"}}
    for name, keys in rotation.items():
        ctx = unit_context(tmp_path / name, pseudonym_keys=keys)
        ctx.watch = WatchCache({plate_entry.entry_id.encode(): watchlists.encode(plate_entry)})
        asyncio.run(put_all(ctx, "frames", [(b"cam-1", body, frame_headers(TENANT, "cam-1", 1, body, T0))],
                            lambda c=ctx: sent(c, "alerts")))
        [read] = sent(ctx, "plate_reads")
        [alert] = sent(ctx, "alerts")
        assert read["watchlist_hit"] and plate_entry.entry_id in alert["message"]
        assert label.registration not in alert["message"]
        got[name] = (read["plate_pseudonym"], keys[TENANT])
    assert got["before"][0] != got["after"][0]
    for pseudo, key in got.values():
        assert pseudo == pseudonym(label.registration, label.province, key.encode())
    assert pseudonym(label.registration, label.province, b"other") not in {p for p, _ in got.values()}
