"""Page routes: the camera wall and its frames, the sensor panels, the watchlists.

Store reads run in the thread pool (the embedded engine and the sink's query endpoint block); when the
store cannot answer, the page says so instead of failing.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from citystream.clickhouse import StoreError
from citystream.console import actions, sensors, store
from citystream.console.app import check_csrf, render, require
from citystream.console.feed import Feed
from citystream.processors.watchlists import watchlists
from citystream.processors.watchlists.cli import parse_expiry
from citystream.settings import Settings


async def _cameras(request: Request) -> tuple[list[store.Camera], str | None]:
    user = require(request)
    try:
        return await run_in_threadpool(store.cameras, request.app.state.settings, user.tenants), None
    except StoreError as exc:
        return [], str(exc)


async def cameras_page(request: Request) -> Response:
    """The camera wall."""
    user = require(request)
    cams, error = await _cameras(request)
    return render(request, "cameras.html", {"cameras": cams, "error": error, "frames": user.can("frames")})


async def cameras_json(request: Request) -> Response:
    """The camera wall as JSON."""
    cams, error = await _cameras(request)
    if error:
        return JSONResponse({"error": error, "cameras": []}, status_code=503)
    return JSONResponse({"cameras": [
        {**asdict(c), "last_heartbeat": c.last_heartbeat.isoformat() if c.last_heartbeat else None,
         "last_frame_at": c.last_frame_at.isoformat() if c.last_frame_at else None} for c in cams]})


async def frame_jpeg(request: Request) -> Response:
    """An analysed frame with its detection boxes drawn (roles that may see images)."""
    user = require(request, "frames")
    settings: Settings = request.app.state.settings
    event_id = request.path_params["event_id"]
    if not store.EVENT_ID.fullmatch(event_id):
        raise HTTPException(404, "no such frame")
    try:
        found = await run_in_threadpool(store.frame, settings, event_id, user.tenants)
    except StoreError as exc:
        raise HTTPException(503, str(exc)) from exc
    if found is None:
        raise HTTPException(404, "frame not archived (no detections, expired, or not stored yet)")
    path, boxes = found
    jpeg = await run_in_threadpool(store.draw, path.read_bytes(), boxes)
    return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=300"})


async def sensors_page(request: Request) -> Response:
    """PM2.5 / AQI by district and canal levels."""
    user = require(request)
    settings: Settings = request.app.state.settings
    error = None
    air: list[sensors.AirPanel] = []
    canals: list[sensors.CanalPanel] = []
    try:
        air = await run_in_threadpool(sensors.air, settings, user.tenants)
        canals = await run_in_threadpool(sensors.canals, settings, user.tenants)
    except StoreError as exc:
        error = str(exc)
    return render(request, "sensors.html", {"air": air, "canals": canals, "legend": sensors.legend(),
                                            "error": error, "W": sensors.W, "H": sensors.H})


def _entries(request: Request) -> list[watchlists.WatchlistEntry]:
    user = require(request, "watchlist.view")
    feed: Feed = request.app.state.feed
    now = datetime.now(UTC)
    with feed.lock:
        entries = list(feed.entries.values())
    return sorted((e for e in entries if e.active(now) and user.sees_tenant(e.tenant)),
                  key=lambda e: (e.tenant, e.kind, e.created_at))


async def watchlists_page(request: Request) -> Response:
    """Active watchlist entries and the forms to add and remove them."""
    user = require(request, "watchlist.view")
    message = request.query_params.get("message", "")[:300]
    return render(request, "watchlists.html", {"entries": _entries(request), "edit": user.can("watchlist.edit"),
                                               "message": message,
                                               "tenants": user.tenants or _known_tenants(request)})


def _known_tenants(request: Request) -> tuple[str, ...]:
    settings: Settings = request.app.state.settings
    feed: Feed = request.app.state.feed
    with feed.lock:
        seen = {i.tenant for i in feed.items.values()} | {e.tenant for e in feed.entries.values()}
    return tuple(sorted(seen | {settings.gateway.tenant}))


def _common_fields(form: dict[str, Any]) -> dict[str, Any]:
    now = datetime.now(UTC)
    try:
        expires = parse_expiry(str(form.get("expires", "")), now)
    except Exception as exc:  # click.BadParameter: the CLI's message is the one to show
        raise actions.ActionError(str(getattr(exc, "message", exc))) from exc
    return {"tenant": str(form.get("tenant", "")).strip(), "label": str(form.get("label", "")).strip(),
            "reason": str(form.get("reason", "")).strip(), "legal_basis": str(form.get("legal_basis", "")).strip(),
            "expires_at": expires, "created_at": now}


async def _face_fields(form: dict[str, Any]) -> dict[str, Any]:
    photo = form.get("photo")
    if not isinstance(photo, UploadFile):
        raise actions.ActionError("a photo with exactly one face is required")
    data = await photo.read()

    def template() -> tuple[float, ...]:
        try:
            import cv2
            import numpy as np

            from citystream.processors.faces.faces import single_template
        except ImportError as exc:
            raise actions.ActionError("face enrolment needs the worker extra (dlib, OpenCV)") from exc
        bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        if bgr is None:
            raise actions.ActionError("the photo is not an image")
        try:
            return tuple(float(v) for v in single_template(bgr))
        except ValueError as exc:
            raise actions.ActionError(str(exc)) from exc

    return {"kind": "face", "entry_id": watchlists.new_face_entry_id(),
            "embedding": await run_in_threadpool(template)}


async def watchlist_add(request: Request) -> Response:
    """Add a plate or a face, with reason, legal basis and expiry (privacy officers and admins)."""
    user = require(request, "watchlist.edit")
    form = await check_csrf(request)
    kind = request.path_params["kind"]
    try:
        fields = _common_fields(form)
        if kind == "plate":
            registration, province = str(form.get("registration", "")).strip(), str(form.get("province", "")).strip()
            fields.update(kind="plate", registration=registration, province=province,
                          entry_id=watchlists.plate_entry_id(fields["tenant"], registration, province))
        elif kind == "face":
            fields.update(await _face_fields(form))
        else:
            raise HTTPException(404, "unknown watchlist kind")
        entry = await run_in_threadpool(actions.add_entry, request.app.state.settings, user, fields)
    except actions.ActionError as exc:
        return render(request, "watchlists.html", {"entries": _entries(request), "edit": True, "message": str(exc),
                                                   "tenants": user.tenants or _known_tenants(request)},
                      status_code=400)
    request.app.state.feed.ingest("watchlists", entry.entry_id.encode(), watchlists.encode(entry))
    return RedirectResponse("/watchlists?" + urlencode({"message": f"added {entry.entry_id}"}), 303)


async def watchlist_remove(request: Request) -> Response:
    """Remove an entry with a reason (privacy officers and admins)."""
    user = require(request, "watchlist.edit")
    form = await check_csrf(request)
    feed: Feed = request.app.state.feed
    entry = feed.entries.get(request.path_params["entry_id"])
    if entry is None or not user.sees_tenant(entry.tenant):
        raise HTTPException(404, "no such watchlist entry")
    try:
        await run_in_threadpool(actions.remove_entry, request.app.state.settings, user, entry,
                                str(form.get("reason", "")))
    except actions.ActionError as exc:
        return RedirectResponse("/watchlists?" + urlencode({"message": str(exc)[:300]}), 303)
    feed.ingest("watchlists", entry.entry_id.encode(), None)
    return RedirectResponse("/watchlists?" + urlencode({"message": f"removed {entry.entry_id}"}), 303)


ROUTES = [
    Route("/cameras", cameras_page),
    Route("/api/cameras", cameras_json),
    Route("/frames/{event_id}.jpg", frame_jpeg),
    Route("/sensors", sensors_page),
    Route("/watchlists", watchlists_page),
    Route("/watchlists/{kind}", watchlist_add, methods=["POST"]),
    Route("/watchlists/{entry_id}/remove", watchlist_remove, methods=["POST"]),
]
