"""What the console reads from ClickHouse: cameras and their status, analysed frames, sensor series.

Every query goes through the read-only path (:func:`citystream.clickhouse.query_rows`), on the analyst
views (``v_*``). On the embedded engine the console never opens the data directory itself: it asks the
sink that owns it (or uses it when this process already has it open, as in tests); with no sink
running the store is reported unavailable, because opening the directory would lock the sink out.
Values interpolated into SQL are checked against the contracts' patterns first (:func:`quoted`).
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from citystream import clickhouse
from citystream.clickhouse import StoreError
from citystream.schemas import migrate as schema
from citystream.settings import Settings

EVENT_ID = re.compile(r"^[0-9a-f-]{36}$")
TENANT = re.compile(r"^[a-z0-9-]{1,64}$")
UP_STATES = ("heartbeat", "online", "gap")
STEP_S = 15  # chart resolution: 240 points an hour, and a trend within a minute of a sensor starting


def quoted(value: str, pattern: re.Pattern[str]) -> str:
    """``value`` as a SQL string literal, after checking it against ``pattern`` (ValueError otherwise)."""
    if not pattern.fullmatch(value):
        raise ValueError(f"not an identifier of the expected form: {value!r}")
    return f"'{value}'"


def tenant_filter(tenants: tuple[str, ...]) -> str:
    """``AND tenant IN (...)`` for a user limited to some tenants; empty for all."""
    if not tenants:
        return ""
    return f" AND tenant IN ({', '.join(quoted(t, TENANT) for t in tenants)})"


def check_reachable(settings: Settings) -> None:
    """StoreError when the embedded store has no sink serving it (opening it here would lock the sink out)."""
    path = clickhouse.chdb_path(settings.clickhouse.dsn)
    if path is not None and not clickhouse.opened_here(settings) and clickhouse.read_owner(path) is None:
        raise StoreError("no sink is serving the embedded store (start 'citystream sink')")


def query(settings: Settings, sql: str) -> list[dict[str, Any]]:
    """Rows of read-only SQL; StoreError when the store cannot answer (never opens a sink's directory)."""
    check_reachable(settings)
    return clickhouse.query_rows(settings, sql, timeout=15.0)


@dataclass(frozen=True)
class Camera:
    """One camera on the wall."""

    tenant: str
    device_id: str
    gateway_id: str
    district: str
    online: bool | None
    """None: no status from its gateway seen."""
    fps: float
    last_heartbeat: datetime | None
    last_frame_at: datetime | None
    last_frame_id: str | None
    detections: int


def cameras(settings: Settings, tenants: tuple[str, ...], now: datetime | None = None) -> list[Camera]:
    """Every camera seen in the frame index or detections, with its gateway's latest status."""
    now = now or datetime.now(UTC)
    where = tenant_filter(tenants)
    frames = query(settings, f"""
        SELECT tenant, device_id, any(gateway_id) AS gateway_id, any(district) AS district,
               max(captured_at) AS last_frame_at, argMax(event_id, captured_at) AS last_frame_id,
               argMax(detections, captured_at) AS detections
        FROM {schema.view_of(schema.FRAME_INDEX)} WHERE 1{where} GROUP BY tenant, device_id""")
    seen = {(r["tenant"], r["device_id"]) for r in frames}
    reads = query(settings, f"""
        SELECT tenant, device_id, any(gateway_id) AS gateway_id, any(district) AS district
        FROM {schema.view_of(schema.PLATE_READS)} WHERE captured_at > now() - INTERVAL 1 DAY{where}
        GROUP BY tenant, device_id""")
    rows = frames + [dict(r, last_frame_at=None, last_frame_id=None, detections=0) for r in reads
                     if (r["tenant"], r["device_id"]) not in seen]
    status = {(r["tenant"], r["gateway_id"]): r for r in query(settings, f"""
        SELECT tenant, gateway_id, argMax(state, captured_at) AS state, argMax(fps, captured_at) AS fps,
               max(captured_at) AS at
        FROM {schema.view_of(schema.DEVICE_STATUS)} WHERE device_id = gateway_id{where}
        GROUP BY tenant, gateway_id""")}
    out = []
    for r in rows:
        st = status.get((r["tenant"], r["gateway_id"]))
        online = None if st is None else (
            st["state"] in UP_STATES and now - st["at"] < timedelta(seconds=settings.console.camera_offline_s))
        out.append(Camera(r["tenant"], r["device_id"], r["gateway_id"], r["district"], online,
                          float(st["fps"]) if st else 0.0, st["at"] if st else None, r["last_frame_at"],
                          r["last_frame_id"], int(r["detections"])))
    return sorted(out, key=lambda c: (c.tenant, c.district, c.device_id))


@dataclass(frozen=True)
class Box:
    """A detection box on a frame."""

    kind: str
    x: int
    y: int
    w: int
    h: int
    hit: bool


def _box(kind: str, bbox: list[int], hit: bool) -> Box:
    x, y, w, h = (int(v) for v in bbox)
    return Box(kind, x, y, w, h, hit)


def frame(settings: Settings, event_id: str, tenants: tuple[str, ...]) -> tuple[Path, list[Box]] | None:
    """The archived JPEG of an analysed frame and its detection boxes; None when not indexed (or not visible)."""
    eid = quoted(event_id, EVENT_ID)
    rows = query(settings, f"SELECT object_ref FROM {schema.view_of(schema.FRAME_INDEX)} "
                           f"WHERE event_id = {eid}{tenant_filter(tenants)} LIMIT 1")
    if not rows:
        return None
    root = settings.sink.frames_dir.resolve()
    path = (root / rows[0]["object_ref"]).resolve()
    if not path.is_relative_to(root) or not path.is_file():
        return None
    boxes = [_box("plate", r["bbox"], bool(r["hit"])) for r in query(settings, f"""
        SELECT bbox, watchlist_hit AS hit FROM {schema.view_of(schema.PLATE_READS)} WHERE source_event_id = {eid}""")]
    boxes += [_box("face", r["bbox"], True) for r in query(settings, f"""
        SELECT bbox FROM {schema.view_of(schema.FACE_MATCHES)} WHERE source_event_id = {eid}""")]
    return path, boxes


COLOURS = {("plate", False): (46, 204, 113), ("plate", True): (231, 76, 60), ("face", True): (241, 196, 15)}


def draw(jpeg: bytes, boxes: list[Box]) -> bytes:
    """The frame with its boxes drawn (green plate, red watchlisted plate, yellow face), as JPEG."""
    from PIL import Image, ImageDraw

    image = Image.open(io.BytesIO(jpeg)).convert("RGB")
    pen = ImageDraw.Draw(image)
    width = max(2, image.width // 300)
    for b in boxes:
        pen.rectangle((b.x, b.y, b.x + b.w, b.y + b.h), outline=COLOURS[(b.kind, b.hit)], width=width)
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=85)
    return out.getvalue()


def sensor_series(settings: Settings, metric: str, tenants: tuple[str, ...], minutes: int = 60,
                  by: str = "district") -> dict[str, list[tuple[datetime, float]]]:
    """Means of ``metric`` per STEP_S seconds over the last ``minutes``, by ``district`` or ``device_id``."""
    if by not in ("district", "device_id") or not re.fullmatch(r"[a-z0-9_]+", metric):
        raise ValueError("bad series request")
    rows = query(settings, f"""
        SELECT {by} AS key, toDateTime64(toStartOfInterval(captured_at, INTERVAL {STEP_S} SECOND), 3, 'UTC') AS t,
               avg(value) AS v
        FROM {schema.view_of(schema.SENSOR_READINGS)}
        WHERE metric = '{metric}' AND captured_at > now() - INTERVAL {int(minutes)} MINUTE{tenant_filter(tenants)}
        GROUP BY key, t ORDER BY key, t""")
    series: dict[str, list[tuple[datetime, float]]] = {}
    for r in rows:
        series.setdefault(r["key"] or "-", []).append((r["t"], float(r["v"])))
    return series


def day_means(settings: Settings, metric: str, tenants: tuple[str, ...]) -> dict[str, float]:
    """Mean of ``metric`` per district over the last 24 hours (what the Thai AQI is defined on)."""
    if not re.fullmatch(r"[a-z0-9_]+", metric):
        raise ValueError("bad metric")
    rows = query(settings, f"""
        SELECT district AS key, avg(value) AS v FROM {schema.view_of(schema.SENSOR_READINGS)}
        WHERE metric = '{metric}' AND captured_at > now() - INTERVAL 1 DAY{tenant_filter(tenants)}
        GROUP BY key ORDER BY key""")
    return {r["key"] or "-": float(r["v"]) for r in rows}
