"""``citystream gateway`` and ``citystream gateway simulate`` as real processes."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import orjson
import pytest
import yaml

from citystream.settings import dump_settings
from tests.conftest import REPO, citystream, free_port
from tests.ingest.test_gateway_publish import Subscriber, assert_complete_and_ordered, stack_settings


@pytest.mark.unit
def test_bad_config_key_exits_2_with_the_field_path(tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(yaml.safe_dump({"gateway": {
        "gateway_id": "gw-1",
        "cameras": [{"type": "video", "device_id": "cam-1", "path": "/nope.mp4", "fpz": 5}],
        "sensors": [{"device_id": "pm-1", "metric": "pm2.5"}],
        "spool": {"policy": "drop_newest"}}}))
    res = citystream("gateway", "--duration", "1", config=config, check=False)
    assert res.returncode == 2
    assert "gateway.cameras.0.video.fpz: Extra inputs are not permitted" in res.stderr
    assert "gateway.sensors.0.simulated.metric" in res.stderr
    assert "gateway.spool.policy" in res.stderr
    assert "Traceback" not in res.stderr


@pytest.mark.unit
def test_unusable_state_dir_exits_2(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    config = tmp_path / "gateway.yaml"
    config.write_text(yaml.safe_dump({"gateway": {"state_dir": str(blocker / "state")}, "metrics": {"port": 0}}))
    res = citystream("gateway", "--duration", "1", config=config, check=False)
    assert res.returncode == 2
    assert "gateway.state_dir" in res.stderr and "Traceback" not in res.stderr


@pytest.mark.unit
def test_bad_simulate_prefix_is_a_usage_error() -> None:
    res = citystream("gateway", "simulate", "--prefix", "a/b#", "--duration", "1", check=False)
    assert res.returncode == 2
    assert "--prefix" in res.stderr


@pytest.mark.integration
def test_wrong_password_exits_2_with_a_clear_message(stack_home: Path, unique: str, tmp_path: Path) -> None:
    settings = stack_settings(stack_home, unique, tmp_path, password="wrong")
    config = tmp_path / "gateway.yaml"
    config.write_text(yaml.safe_dump(dump_settings(settings), allow_unicode=True))
    res = citystream("gateway", "--duration", "5", config=config, check=False)
    assert res.returncode == 2
    assert "refused the connection" in res.stderr and "gateway.password" in res.stderr
    assert "wrong" not in res.stderr  # secrets never logged


@pytest.mark.integration
def test_simulate_json_counts_match_what_the_broker_delivered(stack_home: Path, unique: str, tmp_path: Path) -> None:
    settings = stack_settings(stack_home, unique, tmp_path, tenant="pathum-thani")
    config = tmp_path / "city.yaml"
    config.write_text(yaml.safe_dump(dump_settings(settings), allow_unicode=True))
    sub = Subscriber(settings, f"{unique}/#")
    try:
        res = citystream("gateway", "simulate", "--gateways", "2", "--cameras", "1", "--sensors", "3",
                         "--rate", "5", "--duration", "3", "--width", "320", "--height", "180",
                         "--prefix", unique, "--json", config=config, timeout=120)
        stats = orjson.loads(res.stdout)
        sub.wait_for("every published reading", lambda: sub.count("reading") >= stats["published"]["reading"],
                     timeout_s=20)
    finally:
        sub.close()
    msgs = sub.received()
    assert stats["gateway_ids"] == [f"{unique}-gw-000", f"{unique}-gw-001"]
    assert (stats["gateways"], stats["cameras"], stats["sensors"]) == (2, 1, 3)
    assert stats["left_in_spool"] == 0 and not stats["dropped"]
    for stream in ("reading", "frame", "status"):
        assert stats["published"][stream] == stats["captured"][stream]
    assert stats["published"]["reading"] == sub.count("reading")
    assert stats["published"]["frame"] == sub.count("frame")
    assert stats["published"]["status"] + 2 == sub.count("status")  # + each gateway's last will, sent by the broker
    assert stats["published"]["reading"] >= 2 * 3 * 5 * 2  # 2 gateways x 3 sensors x 5/s for ~3 s
    assert stats["published"]["frame"] >= 2
    for gateway in stats["gateway_ids"]:
        mine = [m for m in msgs if m.topic.split("/")[2] == gateway]
        assert assert_complete_and_ordered(mine, "reading") > 0
        assert {m.topic.split("/")[1] for m in mine} == {"pathum-thani"}
        assert {m.doc()["tenant"] for m in mine} == {"pathum-thani"}
        metrics = {m.doc()["metric"] for m in mine if m.stream == "reading"}
        assert metrics == {"pm25_ug_m3", "water_level_cm", "temperature_c"}


@pytest.mark.unit
def test_metrics_are_served_and_sigterm_stops_cleanly(tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "gateway.yaml"
    config.write_text(yaml.safe_dump({
        "mqtt": {"port": free_port()},  # nothing listens: readings wait in the spool
        "metrics": {"port": port},
        "gateway": {"gateway_id": "gw-term", "state_dir": str(tmp_path / "state"), "connect_timeout_s": 0.1,
                    "drain_s": 0.5, "sensors": [{"device_id": "pm-1", "metric": "pm25_ug_m3", "interval_s": 0.05}]}}))
    log = tmp_path / "gateway.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "citystream", "gateway", "--config", str(config)],
                                cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline, text = time.monotonic() + 30, ""
        while 'citystream_gateway_spooled_total{stream="reading"}' not in text:
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
                    text = resp.read().decode()
            except OSError:
                continue
        for name in ("citystream_gateway_captured_total", "citystream_gateway_spool_bytes",
                     "citystream_gateway_connected 0.0", "citystream_gateway_encode_seconds_bucket"):
            assert name in text
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "gateway stopped" in log.read_text()
