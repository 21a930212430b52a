"""Live feed routes: the feed page, its server-sent events, alert acknowledgement and closing.

``/events`` sends the newest items first (``event: item``, JSON per item, redacted for the user's role
and tenants), then every changed item as the feed changes; a comment line every 15 s keeps proxies
from closing the stream. The browser reconnects by itself (EventSource) and gets the snapshot again;
the page replaces items by id, so nothing shows twice.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from citystream.console import actions
from citystream.console.app import check_csrf, render, require
from citystream.console.auth import User
from citystream.console.feed import Feed, FeedItem, recent

SNAPSHOT = 100
KEEPALIVE_S = 15.0


def present(item: FeedItem, user: User, feed: Feed) -> dict[str, Any]:
    """The item as this user may see it: plate text only for roles allowed, frames only for roles allowed."""
    doc: dict[str, Any] = {"id": item.id, "kind": item.kind, "at": item.at.isoformat(), "tenant": item.tenant,
                           "device": item.device_id, "district": item.district}
    if user.can("frames") and item.source_event_id and item.kind in ("plate", "face"):
        doc["frame"] = f"/frames/{item.source_event_id}.jpg"
    entry = feed.entry(item.data.get("entry_id"))
    if entry is not None:
        doc["label"] = entry.label
    if user.plate_text and entry is not None and entry.kind == "plate":  # a hit, or the alert naming the entry
        doc["plate_text"] = f"{entry.registration} {entry.province}".strip()
    if item.kind == "plate":
        doc.update(pseudonym=item.data["pseudonym"][:12], hit=item.data["hit"],
                   confidence=round(item.data["confidence"], 2))
    elif item.kind == "face":
        doc["distance"] = round(item.data["distance"], 3)
    else:
        action = feed.actions.get(item.id)
        doc.update({k: item.data[k] for k in ("alert_type", "severity", "state", "message", "value", "threshold")})
        doc["can_act"] = user.can("alerts.act") and item.data["state"] == "raised" and not (
            action is not None and action.closed_by)
        if action is not None:
            doc.update(acked_by=action.acked_by, closed_by=action.closed_by)
    return doc


def visible(items: list[FeedItem], user: User) -> list[FeedItem]:
    """Items of the user's tenants."""
    return [i for i in items if user.sees_tenant(i.tenant)]


def snapshot(feed: Feed, items: list[FeedItem], user: User, limit: int) -> list[FeedItem]:
    """The ``limit`` newest visible items plus every open alert (however old), newest first."""
    mine = visible(items, user)
    newest = recent(mine, limit)
    shown = {i.id for i in newest}
    open_alerts = [i for i in mine if i.kind == "alert" and i.id not in shown and i.data["state"] == "raised"
                   and not (i.id in feed.actions and feed.actions[i.id].closed_by)]
    return recent(newest + open_alerts, len(newest) + len(open_alerts))


async def feed_page(request: Request) -> Response:
    """The live feed page (filled by /events)."""
    require(request)
    return render(request, "feed.html", {})


async def feed_json(request: Request) -> Response:
    """The newest items as JSON (what the page starts from)."""
    user = require(request)
    feed: Feed = request.app.state.feed
    _version, items = feed.changed_since(0)
    limit = min(int(request.query_params.get("limit", SNAPSHOT)), 1000)
    return JSONResponse({"items": [present(i, user, feed) for i in snapshot(feed, items, user, limit)]})


def _sse(item: dict[str, Any]) -> str:
    return f"event: item\nid: {item['id']}\ndata: {json.dumps(item, ensure_ascii=False)}\n\n"


async def events(request: Request) -> Response:
    """Server-sent events: the snapshot, then changes as they happen."""
    user = require(request)
    feed: Feed = request.app.state.feed

    async def stream() -> AsyncIterator[str]:
        version, items = feed.changed_since(0)
        yield "retry: 2000\n\n"
        for item in reversed(snapshot(feed, items, user, SNAPSHOT)):
            yield _sse(present(item, user, feed))
        while True:
            await feed.wait(version, KEEPALIVE_S)
            if await request.is_disconnected():
                return
            newer, changed = feed.changed_since(version)
            if newer == version:
                yield ": keepalive\n\n"
                continue
            version = newer
            for item in sorted(visible(changed, user), key=lambda i: i.version):
                yield _sse(present(item, user, feed))

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


async def alert_action(request: Request) -> Response:
    """Acknowledge or close an alert (operators and admins), audited."""
    user = require(request, "alerts.act")
    form = await check_csrf(request)
    feed: Feed = request.app.state.feed
    alert_id, action = request.path_params["alert_id"], request.path_params["action"]
    if action not in ("ack", "close"):
        raise HTTPException(404, "unknown action")
    item = feed.items.get(alert_id)
    if item is None or item.kind != "alert" or not user.sees_tenant(item.tenant):
        raise HTTPException(404, "no such alert in the live feed")
    reason = str(form.get("reason", "") or request.headers.get("x-reason", ""))[:500]
    try:
        if action == "ack":
            await run_in_threadpool(actions.acknowledge, request.app.state.settings, user, item, reason)
        else:
            await run_in_threadpool(actions.close, request.app.state.settings, user, item, reason)
    except actions.ActionError as exc:
        raise HTTPException(503, str(exc)) from exc
    feed.mark(alert_id, user, action)
    return JSONResponse({"ok": True, "alert": present(item, user, feed)})


ROUTES = [
    Route("/feed", feed_page),
    Route("/api/feed", feed_json),
    Route("/events", events),
    Route("/alerts/{alert_id}/{action:str}", alert_action, methods=["POST"]),
]
