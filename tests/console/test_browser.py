"""The console in headless Chromium (Debian's /usr/bin/chromium driven by Playwright) on the real stack.

The console runs in this process under uvicorn (it shares the test's chDB path, which one process may
open); Kafka and Mosquitto are the session's servers. Watchlist hits are published to the output topics
as the worker publishes them. Screenshots go to ``.build/screenshots/`` (test artefacts).
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from citystream.console.app import create_app
from citystream.schemas import topics
from citystream.settings import Settings
from citystream.stack.procs import free_port
from tests.console.conftest import CAMERA, PASSWORDS, REGISTRATION, city, plate_alert, plate_read, publish, watch_plate

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]
SHOTS = Path(__file__).resolve().parents[2] / ".build" / "screenshots"


@pytest.fixture
def console_url(console_settings: Settings) -> Iterator[str]:
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(console_settings), host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="on", timeout_graceful_shutdown=2))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        from tests.console.conftest import wait_for

        wait_for(lambda: server.started, "the console to listen", 30)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)


@pytest.fixture
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail("Debian chromium is not installed (make setup installs it)")
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=FLAGS)
        try:
            yield chromium
        finally:
            chromium.close()


def _login(browser: Browser, url: str, user: str) -> Page:
    context = browser.new_context(viewport={"width": 1280, "height": 860}, locale="th-TH")
    page = context.new_page()
    page.set_default_timeout(30_000)
    page.goto(f"{url}/cameras")
    assert "/login" in page.url
    page.fill("#username", user)
    page.fill("#password", PASSWORDS[user])
    page.click("#login-submit")
    page.wait_for_url(f"{url}/cameras")
    return page


def _shot(page: Page, name: str, tmp_path: Path) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(tmp_path / name), full_page=True)
    shutil.copy(tmp_path / name, SHOTS / name)


def test_operator_sees_cameras_and_a_live_watchlist_hit_acknowledges_it_and_an_analyst_sees_no_plate_text(
        console_settings: Settings, console_url: str, browser: Browser, tmp_path: Path) -> None:
    data = city(console_settings)
    entry = watch_plate(console_settings)

    page = _login(browser, console_url, "op")
    camera = page.locator(f'.camera[data-device="{CAMERA}"]')
    assert "online" in camera.get_attribute("class")
    frame = camera.locator("img")
    frame.wait_for()
    assert frame.evaluate("img => img.complete && img.naturalWidth") == 320  # the drawn frame loaded
    assert data["frame_id"] in frame.get_attribute("src")
    _shot(page, "console-cameras.png", tmp_path)

    page.click("#nav-feed")
    page.wait_for_selector("#feed-state.live")
    read = plate_read(11, hit=True, at=datetime.now(UTC))  # arrives after the page is open: live
    alert = plate_alert(read, entry.entry_id)
    publish(console_settings, topics.PLATE_READS, [read])
    publish(console_settings, topics.ALERTS, [alert])
    plate_text = page.locator(f"#item-{read.event_id} .plate-text")
    plate_text.wait_for()
    assert plate_text.inner_text() == f"{REGISTRATION} ปทุมธานี"
    page.click(f"#item-{alert.event_id} button.act.ack")
    acked = page.locator(f"#item-{alert.event_id} .acked")
    acked.wait_for()
    assert "op user" in acked.inner_text()
    assert page.locator(f"#item-{alert.event_id} button.act.ack").count() == 0
    pinned = page.locator(f"#open-alerts #open-{alert.event_id}")  # open alerts stay pinned above the feed
    assert "op user" in pinned.locator(".acked").inner_text()
    _shot(page, "console-feed.png", tmp_path)
    pinned.locator("button.act.close").click()
    page.locator(f"#item-{alert.event_id} .closed").wait_for()
    pinned.wait_for(state="detached")
    assert page.locator("#open-alerts").is_hidden()

    analyst = _login(browser, console_url, "analyst")
    analyst.click("#nav-feed")
    row = analyst.locator(f"#item-{read.event_id}")
    row.wait_for()
    assert read.plate_pseudonym[:12] in row.inner_text()
    assert analyst.locator(".plate-text").count() == 0
    assert REGISTRATION not in analyst.content()
    assert analyst.locator("button.act").count() == 0
    assert analyst.locator("#nav-watchlists").count() == 0
    _shot(analyst, "console-feed-analyst.png", tmp_path)
