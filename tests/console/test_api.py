"""Console API on the real stack: Kafka (feed, alert closing, watchlists), chDB (cameras, frames, sensors, audit)."""

from __future__ import annotations

import io
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from PIL import Image
from starlette.testclient import TestClient

from citystream import audit
from citystream.console.app import create_app
from citystream.processors.watchlists import watchlists
from citystream.schemas import topics
from citystream.schemas.events import Alert
from citystream.settings import Settings
from tests.console.conftest import (
    CAMERA,
    PASSWORDS,
    REGISTRATION,
    city,
    plate_alert,
    plate_read,
    publish,
    wait_for,
    watch_plate,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def app_client(console_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(console_settings), base_url="http://testserver") as client:
        yield client


def form_csrf(client: TestClient) -> str:
    """The CSRF token of the login form (the session before login)."""
    return client.get("/login").text.split('name="csrf" value="')[1].split('"')[0]


def login(client: TestClient, user: str) -> str:
    """Log in; returns the session's CSRF token (from the page's meta tag)."""
    res = client.post("/login", data={"username": user, "password": PASSWORDS[user], "next": "/feed",
                                      "csrf": form_csrf(client)}, follow_redirects=False)
    assert res.status_code == 303, res.text
    page = client.get("/feed").text
    return page.split('name="csrf-token" content="')[1].split('"')[0]


def test_pages_need_a_login_and_a_wrong_password_is_refused(app_client: TestClient) -> None:
    res = app_client.get("/cameras", follow_redirects=False)
    assert res.status_code == 303 and res.headers["location"].startswith("/login")
    assert app_client.get("/api/feed").status_code == 401
    no_token = app_client.post("/login", data={"username": "op", "password": PASSWORDS["op"]}, follow_redirects=False)
    assert no_token.status_code == 403  # login CSRF: the form's token is required too
    csrf = form_csrf(app_client)
    bad = app_client.post("/login", data={"username": "op", "password": "wrong", "csrf": csrf}, follow_redirects=False)
    assert bad.status_code == 401 and "login-error" in bad.text
    nobody = app_client.post("/login", data={"username": "nobody", "password": "x", "csrf": csrf},
                             follow_redirects=False)
    assert nobody.status_code == 401
    ok = app_client.post("/login", data={"username": "op", "password": PASSWORDS["op"], "csrf": csrf},
                         follow_redirects=False)
    assert ok.status_code == 303
    cookie = ok.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "secure" not in cookie  # plain HTTP here
    assert "default-src 'self'" in ok.headers["content-security-policy"]
    assert app_client.get("/cameras").status_code == 200


def test_repeated_wrong_passwords_lock_the_login_for_a_while(app_client: TestClient) -> None:
    csrf = form_csrf(app_client)
    for _ in range(5):
        res = app_client.post("/login", data={"username": "dpo", "password": "guess", "csrf": csrf})
        assert res.status_code == 401
    right = app_client.post("/login", data={"username": "dpo", "password": PASSWORDS["dpo"], "csrf": csrf},
                            follow_redirects=False)
    assert right.status_code == 429 and "Too many failed attempts" in right.text
    other = app_client.post("/login", data={"username": "op", "password": PASSWORDS["op"], "csrf": csrf},
                            follow_redirects=False)
    assert other.status_code == 303  # only that login name is held back


def test_posts_without_the_sessions_csrf_token_are_refused(app_client: TestClient, console_settings: Settings) -> None:
    login(app_client, "dpo")
    form = {"tenant": "nakhon-rangsit", "registration": "2ขค 55", "reason": "r", "legal_basis": "b", "expires": "1d"}
    assert app_client.post("/watchlists/plate", data=form, follow_redirects=False).status_code == 403
    assert app_client.post("/watchlists/plate", data={**form, "csrf": "forged"},
                           follow_redirects=False).status_code == 403
    assert app_client.post("/logout", follow_redirects=False).status_code == 403
    entry_id = watchlists.plate_entry_id("nakhon-rangsit", "2ขค 55", "")
    assert entry_id not in watchlists.read_all(console_settings)


def test_camera_wall_shows_status_and_the_latest_frame_with_boxes(app_client: TestClient,
                                                                  console_settings: Settings) -> None:
    data = city(console_settings)
    login(app_client, "op")
    cams = app_client.get("/api/cameras").json()["cameras"]
    assert [(c["device_id"], c["online"], c["fps"], c["last_frame_id"]) for c in cams] == [
        (CAMERA, True, 4.5, data["frame_id"])]
    page = app_client.get("/cameras").text
    assert f'/frames/{data["frame_id"]}.jpg' in page and "ออนไลน์" in page
    res = app_client.get(f"/frames/{data['frame_id']}.jpg")
    assert res.status_code == 200 and res.headers["content-type"] == "image/jpeg"
    image = Image.open(io.BytesIO(res.content)).convert("RGB")
    r, g, b = image.getpixel((140, 120))  # top edge of the plate box (100, 120, 80, 30): watchlisted = red
    assert r > 180 and g < 120 and b < 120
    assert image.getpixel((20, 20)) == pytest.approx((90, 90, 90), abs=6)  # the rest of the frame untouched
    assert app_client.get("/frames/00000000-0000-0000-0000-000000000000.jpg").status_code == 404
    app_client.cookies.clear()
    login(app_client, "analyst")
    assert app_client.get(f"/frames/{data['frame_id']}.jpg").status_code == 403
    assert data["frame_id"] + ".jpg" not in app_client.get("/cameras").text


def test_sensors_show_thai_aqi_bands_and_the_canal_trend_against_the_rule(app_client: TestClient,
                                                                           console_settings: Settings) -> None:
    city(console_settings)
    login(app_client, "analyst")
    page = app_client.get("/sensors").text
    assert 'class="panel band-red" data-district="รังสิต"' in page  # ~81 µg/m³: affects health
    assert 'class="panel band-blue" data-district="คลองหลวง"' in page  # 10 µg/m³: very good
    assert "มีผลกระทบต่อสุขภาพ" in page and "<polyline" in page
    assert 'class="panel alarm" data-device="canal-01"' in page  # +27 cm / 10 min > the 20 cm rule
    assert "+20.0 cm / 10 min" in page


def _feed(client: TestClient) -> dict[str, dict[str, object]]:
    return {i["id"]: i for i in client.get("/api/feed").json()["items"]}


def test_plate_text_only_for_allowed_roles_and_alerts_acknowledged_and_closed_with_audit(
        app_client: TestClient, console_settings: Settings) -> None:
    entry = watch_plate(console_settings)
    read = plate_read(7, hit=True, at=datetime.now(UTC))
    alert = plate_alert(read, entry.entry_id)
    publish(console_settings, topics.PLATE_READS, [read])
    publish(console_settings, topics.ALERTS, [alert])
    csrf = login(app_client, "op")
    items = wait_for(lambda: (f := _feed(app_client)).get(read.event_id, {}).get("plate_text") and f,
                     "the watchlist hit with its plate text in the operator's feed")
    assert items[read.event_id]["plate_text"] == items[alert.event_id]["plate_text"] == f"{REGISTRATION} ปทุมธานี"
    assert items[alert.event_id]["can_act"] is True

    assert app_client.post(f"/alerts/{alert.event_id}/ack").status_code == 403  # no CSRF token
    res = app_client.post(f"/alerts/{alert.event_id}/ack", headers={"X-CSRF-Token": csrf})
    assert res.status_code == 200 and res.json()["alert"]["acked_by"] == "op user"
    res = app_client.post(f"/alerts/{alert.event_id}/close", headers={"X-CSRF-Token": csrf, "X-Reason": "checked"})
    assert res.status_code == 200 and res.json()["alert"]["closed_by"] == "op user"
    logged = [(e["actor"], e["action"], e["subject"]) for e in audit.entries(console_settings)]
    assert ("console:op", "alert.acknowledge", alert.event_id) in logged
    assert ("console:op", "alert.close", alert.event_id) in logged
    cleared = _alerts_in_kafka(console_settings)
    assert [(a.state, a.source_event_id) for a in cleared if a.state == "cleared"] == [("cleared", alert.event_id)]

    app_client.cookies.clear()
    csrf = login(app_client, "analyst")
    body = app_client.get("/api/feed").text
    assert read.event_id in body and REGISTRATION not in body and "plate_text" not in body
    assert read.plate_pseudonym[:12] in body
    assert app_client.post(f"/alerts/{alert.event_id}/ack", headers={"X-CSRF-Token": csrf}).status_code == 403

    with TestClient(create_app(console_settings), base_url="http://testserver") as restarted:
        login(restarted, "op")  # a new console: the acknowledgement comes back from the audit log
        again = wait_for(lambda: (f := _feed(restarted)).get(alert.event_id, {}).get("acked_by") and f,
                         "the acknowledgement restored from the audit log")
        assert (again[alert.event_id]["acked_by"], again[alert.event_id]["closed_by"]) == ("op user", "op user")
        assert again[alert.event_id]["can_act"] is False  # closed: nothing left to do


def _alerts_in_kafka(settings: Settings) -> list[Alert]:
    name = settings.kafka.topic(topics.ALERTS)
    consumer = Consumer({**settings.kafka.client_config(), "group.id": "console-test", "enable.auto.commit": False})
    try:
        parts = [TopicPartition(name, p, OFFSET_BEGINNING) for p in consumer.list_topics(name).topics[name].partitions]
        ends = sum(consumer.get_watermark_offsets(p)[1] for p in parts)
        consumer.assign(parts)
        out: list[Alert] = []
        wait_for(lambda: out.extend(Alert.model_validate_json(m.value()) for m in consumer.consume(100, 1.0)
                                    if m.error() is None) or len(out) >= ends, "the alerts topic read to its end")
        return out
    finally:
        consumer.close()


def test_watchlist_edits_go_through_the_watchlist_topic_with_reason_basis_and_expiry(
        app_client: TestClient, console_settings: Settings) -> None:
    csrf = login(app_client, "op")  # operators see the list but cannot edit it
    form = {"tenant": "nakhon-rangsit", "registration": "3ฆง 777", "province": "กรุงเทพมหานคร", "label": "hit and run",
            "reason": "hit and run 6 Dec", "legal_basis": "court order 45/2569", "expires": "2w", "csrf": csrf}
    assert app_client.post("/watchlists/plate", data=form, follow_redirects=False).status_code == 403
    app_client.cookies.clear()
    csrf = login(app_client, "dpo")
    res = app_client.post("/watchlists/plate", data={**form, "csrf": csrf}, follow_redirects=False)
    assert res.status_code == 303, res.text
    entry_id = watchlists.plate_entry_id("nakhon-rangsit", "3ฆง 777", "กรุงเทพมหานคร")
    entry = watchlists.decode(watchlists.read_all(console_settings)[entry_id])
    assert (entry.reason, entry.legal_basis, entry.created_by) == ("hit and run 6 Dec", "court order 45/2569",
                                                                    "console:dpo")
    assert 13 <= (entry.expires_at - datetime.now(UTC)).days <= 14
    assert "3ฆง 777" in app_client.get("/watchlists").text
    bad = app_client.post("/watchlists/plate", data={**form, "csrf": csrf, "expires": "soon"}, follow_redirects=False)
    assert bad.status_code == 400 and "not a duration" in bad.text
    assert app_client.post(f"/watchlists/{entry_id}/remove", data={"csrf": csrf, "reason": ""},
                           follow_redirects=False).status_code == 303
    assert entry_id in watchlists.read_all(console_settings)  # no reason, no removal
    res = app_client.post(f"/watchlists/{entry_id}/remove", data={"csrf": csrf, "reason": "vehicle recovered"},
                          follow_redirects=False)
    assert res.status_code == 303
    assert entry_id not in watchlists.read_all(console_settings)
    actions = [(e["action"], e["subject"], e["reason"]) for e in audit.entries(console_settings)]
    assert ("watchlist.add_plate", entry_id, "hit and run 6 Dec") in actions
    assert ("watchlist.remove_plate", entry_id, "vehicle recovered") in actions


def test_a_face_is_enrolled_from_a_photo_as_a_template_only(app_client: TestClient, console_settings: Settings) -> None:
    from skimage import data

    photo = io.BytesIO()
    Image.fromarray(data.astronaut()).save(photo, format="PNG")
    csrf = login(app_client, "admin")
    fields = {"tenant": "nakhon-rangsit", "label": "missing person", "reason": "missing person report 88/2569",
              "legal_basis": "PDPA s.24(4) vital interest", "expires": "7d", "csrf": csrf}
    res = app_client.post("/watchlists/face", data=fields, files={"photo": ("a.png", photo.getvalue(), "image/png")},
                          follow_redirects=False)
    assert res.status_code == 303, res.text
    faces = [watchlists.decode(raw) for raw in watchlists.read_all(console_settings).values()]
    [entry] = [e for e in faces if e.kind == "face"]
    assert entry.embedding is not None and len(entry.embedding) == 128 and entry.label == "missing person"
    assert entry.reason == "missing person report 88/2569" and entry.created_by == "console:admin"
    blank = io.BytesIO()
    Image.new("RGB", (200, 200), (120, 120, 120)).save(blank, format="PNG")
    res = app_client.post("/watchlists/face", data=fields, files={"photo": ("b.png", blank.getvalue(), "image/png")})
    assert res.status_code == 400 and "face" in res.text  # no face: a clear error, nothing written
    assert len([raw for raw in watchlists.read_all(console_settings).values()]) == 1
