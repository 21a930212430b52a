"""Watchlist alerts with cooldown, and notifiers (webhook, LINE) against a local HTTP server."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from citystream.processors.notifiers import Dispatcher, TokenBucket
from citystream.processors.watchlists.alerts import Cooldown, face_alert, plate_alert
from citystream.processors.watchlists.watchlists import WatchlistEntry, new_face_entry_id, plate_entry_id
from citystream.schemas.events import Alert, FaceMatch, PlateRead, Severity, make_event_id
from citystream.settings.worker import AlertRule, NotifierSettings

pytestmark = pytest.mark.unit
T0 = datetime(2026, 2, 1, 8, 0, tzinfo=UTC)
TENANT = "nakhon-rangsit"


def watch_entry(kind: str = "plate", label: str = "stolen pickup") -> WatchlistEntry:
    return WatchlistEntry(entry_id=plate_entry_id(TENANT, "1กข 1234", "") if kind == "plate" else new_face_entry_id(),
                          tenant=TENANT, kind=kind, label=label, registration="1กข 1234" if kind == "plate" else "",
                          embedding=(0.0,) * 128 if kind == "face" else None, reason="r", legal_basis="l",
                          expires_at=T0 + timedelta(days=1), created_at=T0)


def base(seq: int = 1) -> dict[str, Any]:
    return {"event_id": make_event_id("gw-1", "plate", seq), "tenant": TENANT, "gateway_id": "gw-1",
            "device_id": "cam-7", "seq": seq, "captured_at": T0, "district": "ประชาธิปัตย์",
            "source_event_id": make_event_id("gw-1", "frame", seq)}


def alert(severity: Severity = Severity.CRITICAL, seq: int = 1) -> Alert:
    return Alert(event_id=make_event_id("gw-1", "alert", seq), tenant=TENANT, gateway_id="gw-1", device_id="pm-1",
                 seq=seq, captured_at=T0, district="รังสิต", alert_type="pm25_high", severity=severity,
                 message="raised: PM2.5 52.0 µg/m³, AQI 139", value=52.0, threshold=37.6)


def test_cooldown_lets_one_alert_per_camera_and_entry_per_period() -> None:
    cooldown = Cooldown(timedelta(seconds=60), capacity=3)
    assert cooldown.allow(TENANT, "cam-1", "e1", T0)
    assert not cooldown.allow(TENANT, "cam-1", "e1", T0 + timedelta(seconds=59))
    assert cooldown.allow(TENANT, "cam-2", "e1", T0 + timedelta(seconds=10))
    assert cooldown.allow(TENANT, "cam-1", "e2", T0 + timedelta(seconds=10))
    assert cooldown.allow(TENANT, "cam-1", "e1", T0 + timedelta(seconds=60))
    assert len(cooldown.last) == 3
    assert cooldown.allow(TENANT, "cam-9", "e9", T0 + timedelta(seconds=61))  # evicts the oldest, stays bounded
    assert len(cooldown.last) == 3


def test_plate_and_face_alerts_name_the_entry_and_keep_ids_deterministic() -> None:
    read = PlateRead(**base(), plate_pseudonym="a" * 64, confidence=0.93, bbox=(10, 20, 200, 90), watchlist_hit=True)
    first, again = plate_alert(read, watch_entry()), plate_alert(read, watch_entry())
    assert first.event_id == again.event_id and first.event_id != read.event_id
    assert (first.alert_type, first.severity, first.state) == ("plate_watchlist", Severity.CRITICAL, "raised")
    assert "stolen pickup" in first.message and "cam-7" in first.message
    assert watch_entry().entry_id in first.message, "the control room resolves the entry in the watchlist"
    assert "1กข" not in first.message and "1234" not in first.message, "no plate text in an alert"
    match = FaceMatch(**base(2), watchlist_entry_id="x" * 36, distance=0.31, bbox=(1, 2, 3, 4))
    face = face_alert(match, watch_entry("face", "missing person"), 0.6)
    assert face.alert_type == "face_watchlist" and face.value == 0.31 and face.threshold == 0.6
    assert "missing person" in face.message and "ใบหน้า" in face.message


def test_alert_rules_and_notifiers_are_validated_at_start() -> None:
    with pytest.raises(ValidationError, match="hysteresis"):
        AlertRule(metric="pm25_ug_m3", alert_type="x", raise_at=30, clear_at=40)
    with pytest.raises(ValidationError):
        NotifierSettings.model_validate({"type": "sms", "url": "http://127.0.0.1/"})
    with pytest.raises(ValidationError):
        NotifierSettings.model_validate({"type": "webhook", "url": "ftp://x"})


def test_token_bucket() -> None:
    now = [0.0]
    bucket = TokenBucket(rate=2.0, burst=2, clock=lambda: now[0])
    assert [bucket.delay() for _ in range(4)] == [0.0, 0.0, 0.5, 1.0]
    now[0] = 10.0
    assert bucket.delay() == 0.0


class Endpoint:
    """A local HTTP server whose paths answer with scripted statuses and record every request."""

    def __init__(self) -> None:
        self.script: dict[str, list[int]] = {}
        self.delay_s: dict[str, float] = {}
        self.seen: dict[str, list[tuple[dict[str, str], bytes]]] = defaultdict(list)
        self.port = 0

    async def handle(self, request: web.Request) -> web.Response:
        path = request.path
        self.seen[path].append((dict(request.headers), await request.read()))
        await asyncio.sleep(self.delay_s.get(path, 0.0))
        statuses = self.script.get(path) or [200]
        return web.Response(status=statuses.pop(0) if len(statuses) > 1 else statuses[0])

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


@asynccontextmanager
async def endpoint() -> AsyncIterator[Endpoint]:
    ep = Endpoint()
    app = web.Application()
    app.router.add_route("POST", "/{tail:.*}", ep.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    ep.port = runner.addresses[0][1]
    try:
        yield ep
    finally:
        await runner.cleanup()


def counts(registry: CollectorRegistry) -> dict[tuple[str, str], float]:
    out = {}
    for family in registry.collect():
        for sample in family.samples:
            if sample.name == "citystream_worker_notifications_total" and sample.value:  # zero series are pre-made
                out[(sample.labels["notifier"], sample.labels["outcome"])] = sample.value
    return out


def test_webhook_and_line_deliver_retry_and_fail_without_blocking() -> None:
    registry = CollectorRegistry()

    async def scenario() -> Endpoint:
        async with endpoint() as ep:
            ep.script = {"/hook": [503, 503, 200], "/bad": [400]}
            ep.delay_s = {"/slow": 1.0}
            configs = [
                NotifierSettings(type="webhook", url=ep.url("/hook"), retries=3, backoff_s=0.01),
                NotifierSettings(type="line", url=ep.url("/line"), token="line-token", to="Cgroup123"),
                NotifierSettings(type="webhook", url=ep.url("/bad"), retries=3, backoff_s=0.01),
                NotifierSettings(type="webhook", url=ep.url("/slow"), retries=1, backoff_s=0.01, timeout_s=0.1),
                NotifierSettings(type="webhook", url=ep.url("/critical-only"), min_severity="critical"),
            ]
            dispatcher = Dispatcher(configs, registry)
            await dispatcher.start()
            dispatcher.submit(alert())
            dispatcher.submit(alert(Severity.WARNING, seq=2))
            await dispatcher.stop(drain_s=10)
            return ep

    ep = asyncio.run(scenario())
    sent = alert()
    hook = ep.seen["/hook"]
    assert len(hook) == 3 + 1  # the first alert: two 503s then 200; the second alert at once
    assert {h["X-Citystream-Event-Id"] for h, _ in hook[:3]} == {sent.event_id}
    assert Alert.model_validate_json(hook[0][1]) == sent
    headers, body = ep.seen["/line"][0]
    assert headers["Authorization"] == "Bearer line-token" and headers["X-Line-Retry-Key"] == sent.event_id
    doc = orjson.loads(body)
    assert doc["to"] == "Cgroup123" and doc["messages"][0]["type"] == "text"
    assert "แจ้งเตือน" in doc["messages"][0]["text"] and "pm25_high" in doc["messages"][0]["text"]
    assert len(ep.seen["/bad"]) == 2  # one try per alert: a 400 is not retried
    assert len(ep.seen["/slow"]) == 4  # timed out, retried once, per alert
    assert len(ep.seen["/critical-only"]) == 1
    assert counts(registry) == {
        ("0-webhook", "sent"): 2, ("0-webhook", "retried"): 2,
        ("1-line", "sent"): 2,
        ("2-webhook", "failed"): 2,
        ("3-webhook", "retried"): 2, ("3-webhook", "failed"): 2,
        ("4-webhook", "sent"): 1,
    }


def test_a_full_queue_drops_and_counts_instead_of_waiting() -> None:
    registry = CollectorRegistry()
    dispatcher = Dispatcher([NotifierSettings(type="webhook", url="http://127.0.0.1:9/", queue_size=2)], registry)
    for seq in range(5):
        dispatcher.submit(alert(seq=seq))  # no sender running: the queue fills
    assert dispatcher.channels[0].queue.qsize() == 2
    assert counts(registry) == {("0-webhook", "dropped"): 3}
