"""Console units without servers: password hashes, roles, settings validation, the feed's linking and bounds."""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from citystream.console import auth, demo_login
from citystream.console.feed import Feed
from citystream.console.live import present
from citystream.console.sensors import chart
from citystream.processors.watchlists import watchlists
from citystream.schemas import topics
from citystream.schemas.wire import to_json
from citystream.settings import ConfigError, load_settings
from tests.console.conftest import REGISTRATION, TENANT, console_users, plate_alert, plate_read

pytestmark = pytest.mark.unit


def test_password_hashes_verify_and_differ_by_salt() -> None:
    one, two = auth.hash_password("s3cret"), auth.hash_password("s3cret")
    assert one != two and auth.verify_password("s3cret", one) and auth.verify_password("s3cret", two)
    assert not auth.verify_password("s3cret!", one)
    assert not auth.verify_password("s3cret", "scrypt$garbage")


def test_roles_have_the_documented_permissions() -> None:
    settings = console_users()
    op, analyst, dpo = (auth.user_of(settings, u) for u in ("op", "analyst", "dpo"))
    assert op and analyst and dpo
    assert op.plate_text and not analyst.plate_text and dpo.plate_text
    assert op.can("alerts.act") and not analyst.can("alerts.act") and not dpo.can("alerts.act")
    assert dpo.can("watchlist.edit") and not op.can("watchlist.edit") and not analyst.can("watchlist.view")
    assert not analyst.can("frames")
    assert auth.authenticate(settings, "op", "op-pass-1") == op
    assert auth.authenticate(settings, "op", "wrong") is None and auth.authenticate(settings, "x", "y") is None


def test_csrf_tokens_compare_exactly() -> None:
    token = auth.new_csrf_token()
    assert auth.csrf_ok(token, token)
    assert not auth.csrf_ok(token, token[:-1]) and not auth.csrf_ok(token, None) and not auth.csrf_ok(None, None)


def test_throttle_refuses_a_login_after_five_failures_until_the_window_passes() -> None:
    now = [0.0]
    throttle = auth.Throttle(limit=5, window_s=300, clock=lambda: now[0])
    for _ in range(5):
        assert throttle.allowed("op")
        throttle.failed("op")
    assert not throttle.allowed("op") and throttle.allowed("analyst")
    now[0] = 301.0
    assert throttle.allowed("op")
    throttle.failed("op")
    throttle.succeeded("op")
    assert throttle.failures == {}


def test_bad_console_settings_fail_at_start_with_the_field_path() -> None:
    with pytest.raises(ConfigError, match=r"console\.users\.bob\.password_hash"):
        load_settings(None, {"console.users": {"bob": {"role": "operator", "password_hash": "plain"}}})
    with pytest.raises(ConfigError, match=r"console\.users\.bob\.role"):
        load_settings(None, {"console.users": {"bob": {"role": "boss", "password_hash": auth.hash_password("x")}}})
    with pytest.raises(ConfigError, match="tls_cert_file and tls_key_file go together"):
        load_settings(None, {"console.tls_cert_file": "/tmp/cert.pem"})


def _feed(size: int = 500) -> Feed:
    settings = load_settings(None).model_copy(update={"console": console_users().model_copy(
        update={"feed_size": size})})
    return Feed(settings)


def _entry() -> watchlists.WatchlistEntry:
    now = datetime.now(UTC)
    return watchlists.WatchlistEntry(entry_id=watchlists.plate_entry_id(TENANT, REGISTRATION, ""), tenant=TENANT,
                                     kind="plate", label="stolen", registration=REGISTRATION, reason="r",
                                     legal_basis="b", expires_at=now + timedelta(days=1), created_at=now)


@pytest.mark.parametrize("alert_first", [False, True])
def test_a_plate_hit_gets_its_entrys_plate_text_for_allowed_roles_whatever_the_arrival_order(alert_first: bool) -> None:
    feed, entry = _feed(), _entry()
    feed.ingest(topics.WATCHLISTS, entry.entry_id.encode(), watchlists.encode(entry))
    read = plate_read(1, hit=True, at=datetime.now(UTC))
    records = [(topics.PLATE_READS, to_json(read)), (topics.ALERTS, to_json(plate_alert(read, entry.entry_id)))]
    for topic, value in reversed(records) if alert_first else records:
        feed.ingest(topic, None, value)
    users = console_users()
    op, analyst = auth.user_of(users, "op"), auth.user_of(users, "analyst")
    assert op and analyst
    assert present(feed.items[read.event_id], op, feed)["plate_text"] == REGISTRATION
    seen = present(feed.items[read.event_id], analyst, feed)
    assert "plate_text" not in seen and REGISTRATION not in str(seen) and "frame" not in seen
    alert_id = plate_alert(read, entry.entry_id).event_id
    assert present(feed.items[alert_id], op, feed)["plate_text"] == REGISTRATION
    assert REGISTRATION not in str(present(feed.items[alert_id], analyst, feed))
    later = plate_read(2, hit=True, at=datetime.now(UTC))  # same car again, its alert held back by the cooldown
    feed.ingest(topics.PLATE_READS, None, to_json(later))
    assert present(feed.items[later.event_id], op, feed)["plate_text"] == REGISTRATION


def test_a_read_that_hit_nothing_has_no_plate_text_for_anyone() -> None:
    feed = _feed()
    read = plate_read(1, hit=False, at=datetime.now(UTC))
    feed.ingest(topics.PLATE_READS, None, to_json(read))
    admin = auth.user_of(console_users(), "admin")
    assert admin and "plate_text" not in present(feed.items[read.event_id], admin, feed)


def test_undecodable_records_are_counted_and_skipped_and_the_feed_is_bounded() -> None:
    feed = _feed(size=10)
    feed.ingest(topics.PLATE_READS, None, b"{not json")
    feed.ingest(topics.WATCHLISTS, b"k", b'{"entry_id": 1}')
    assert feed.invalid == 2 and not feed.items
    for seq in range(25):
        feed.ingest(topics.PLATE_READS, None, to_json(plate_read(seq, hit=False, at=datetime.now(UTC))))
    assert len(feed.items) == 10 and feed.version == 25
    version, changed = feed.changed_since(20)
    assert version == 25 and len(changed) == 5


def test_a_console_closure_marks_the_alert_closed() -> None:
    from citystream.console.actions import closing_alert

    feed, entry = _feed(), _entry()
    alert = plate_alert(plate_read(1, hit=True, at=datetime.now(UTC)), entry.entry_id)
    feed.ingest(topics.ALERTS, None, to_json(alert))
    op = auth.user_of(console_users(), "op")
    assert op
    cleared = closing_alert(feed.items[alert.event_id], op, datetime.now(UTC))
    assert cleared.state == "cleared" and cleared.source_event_id == alert.event_id
    assert closing_alert(feed.items[alert.event_id], op, datetime.now(UTC)).event_id == cleared.event_id
    feed.ingest(topics.ALERTS, None, to_json(cleared))
    assert feed.actions[alert.event_id].closed_by == "op user"
    assert cleared.event_id not in feed.items  # the closure updates the alert, it is no new feed item


def test_the_snapshot_keeps_open_alerts_older_than_the_newest_items() -> None:
    from citystream.console.live import snapshot

    feed, entry = _feed(), _entry()
    now = datetime.now(UTC)
    old_alert = plate_alert(plate_read(1, hit=True, at=now - timedelta(minutes=5)), entry.entry_id)
    feed.ingest(topics.ALERTS, None, to_json(old_alert))
    for seq in range(2, 12):
        feed.ingest(topics.PLATE_READS, None, to_json(plate_read(seq, hit=False, at=now - timedelta(seconds=seq))))
    op = auth.user_of(console_users(), "op")
    assert op
    _version, items = feed.changed_since(0)
    shown = snapshot(feed, items, op, 3)
    assert len(shown) == 4 and shown[-1].id == old_alert.event_id  # the 3 newest reads, then the open alert
    feed.mark(old_alert.event_id, op, "close")
    assert old_alert.event_id not in {i.id for i in snapshot(feed, feed.changed_since(0)[1], op, 3)}


def test_waiters_wake_on_a_change() -> None:
    feed = _feed()

    async def scenario() -> int:
        waiting = asyncio.create_task(feed.wait(0, 30.0))
        await asyncio.sleep(0.05)
        await asyncio.to_thread(feed.ingest, topics.PLATE_READS, None,
                                to_json(plate_read(1, hit=False, at=datetime.now(UTC))))
        await waiting
        return feed.version

    assert asyncio.run(scenario()) == 1


def test_chart_scales_into_the_box_with_thresholds() -> None:
    t0 = datetime(2026, 12, 1, tzinfo=UTC)
    c = chart([(t0, 10.0), (t0 + timedelta(minutes=1), 30.0)], thresholds=(20.0,))
    assert c.points == "0.0,76.0 300.0,4.0" and c.lines == [(40.0, "20")]
    assert chart([]).points == ""


def test_on_tls_the_session_cookie_is_secure() -> None:
    from starlette.testclient import TestClient

    from citystream.console.app import create_app

    console = console_users().model_copy(update={"tls_cert_file": "/etc/c.pem", "tls_key_file": "/etc/k.pem"})
    settings = load_settings(None).model_copy(update={"console": console})
    with TestClient(create_app(settings, run_feed=False), base_url="https://testserver") as client:
        csrf = client.get("/login").text.split('name="csrf" value="')[1].split('"')[0]
        res = client.post("/login", data={"username": "op", "password": "op-pass-1", "csrf": csrf},
                          follow_redirects=False)
    cookie = res.headers["set-cookie"].lower()
    assert res.status_code == 303 and "secure" in cookie and "httponly" in cookie and "samesite=strict" in cookie


def test_the_demo_console_line_names_the_url_the_login_and_how_to_stop_everything(tmp_path: Path) -> None:
    settings = load_settings(None, {"stack.home": str(tmp_path)})
    assert demo_login.console_line(settings) == ""  # no demo console running
    password = demo_login.demo_password(settings)
    assert demo_login.demo_password(settings) == password  # once per stack home
    assert (tmp_path / demo_login.FILE).stat().st_mode & 0o777 == 0o600
    (tmp_path / demo_login.PID_FILE).write_text(str(os.getpid()))  # a running process
    assert demo_login.console_line(settings) == (
        f"console: http://127.0.0.1:8088/  login: demo / {password}  "
        "(stop it, the live pipeline and the stack: citystream stack down)")
