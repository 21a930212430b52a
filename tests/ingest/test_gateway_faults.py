"""Store-and-forward under faults: broker absent at start, broker stopped for 30 s, gateway ``kill -9``.

The broker outage uses a Mosquitto of this test's own (started and stopped through the stack's code
on a free port, with persistence so the test's subscriber keeps its session); the shared session
broker is never stopped. Every test checks the end state: every reading and frame arrived, in
per-device order, none lost (copies of a message may arrive twice; they carry the same event id).
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import yaml
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from citystream.ingest.gateway.gateway import Gateway
from citystream.ingest.gateway.publisher import GatewayMetrics
from citystream.ingest.provision import provision
from citystream.settings import Settings, dump_settings
from citystream.settings.gateway import GatewaySettings
from citystream.stack import mosquitto
from tests.conftest import REPO, free_port
from tests.ingest.test_gateway_publish import (
    Subscriber,
    assert_complete_and_ordered,
    metric,
    provisioned,
    stack_settings,
)

OUTAGE_S = 30.0
USERS = {"bridge": "bridge-secret"}

pytestmark = [pytest.mark.integration, pytest.mark.fault]


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[Settings]:
    """Settings of a Mosquitto this test may stop and start (not started yet), gateway gw-fault provisioned."""
    port = free_port()
    settings = Settings.model_validate({
        "stack": {"home": str(tmp_path / "mq"), "mqtt_port": port},
        "mqtt": {"port": port, "username": "bridge", "password": USERS["bridge"], "topic_root": "own"},
        "gateway": {"gateway_id": "gw-fault", "state_dir": str(tmp_path / "state")},
        "metrics": {"port": 0}})
    cred = provision(settings, settings.gateway.tenant, "gw-fault")  # rendered by the broker's first start
    settings.gateway.username, settings.gateway.password = cred["username"], SecretStr(cred["password"])
    try:
        yield settings
    finally:
        mosquitto.server(settings).stop()


def broker_up(settings: Settings) -> None:
    mosquitto.up(settings, USERS)


def test_broker_absent_then_down_30s_everything_arrives_in_order(own_broker: Settings) -> None:
    settings = own_broker
    gw_settings = GatewaySettings.model_validate({**settings.gateway.model_dump(),
        "gateway_id": "gw-fault", "reconnect_min_s": 0.2, "reconnect_max_s": 1.0, "heartbeat_s": 2.0,
        "cameras": [{"type": "simulated", "device_id": "cam-1", "width": 320, "height": 180, "fps": 4,
                     "scenes": 2, "face_every": 0}],
        "sensors": [{"device_id": "pm-1", "metric": "pm25_ug_m3", "interval_s": 0.05},
                    {"device_id": "wl-1", "metric": "water_level_cm", "interval_s": 0.2}]})
    registry = CollectorRegistry()
    gw = Gateway(settings.mqtt, gw_settings, GatewayMetrics(registry))
    # the subscriber's session (persisted by the broker) exists before the gateway can first connect
    broker_up(settings)
    sub = Subscriber(settings, "own/#", persistent=True)
    mosquitto.server(settings).stop()
    stopped = False
    try:
        gw.start(connect_timeout_s=0.2)  # nothing listens: capture goes to the spool
        time.sleep(2.0)
        assert metric(registry, "citystream_gateway_connected") == 0
        spooled_while_absent = metric(registry, "citystream_gateway_spooled_total", stream="reading")
        assert spooled_while_absent > 10

        broker_up(settings)
        sub.wait_for("the spooled backlog", lambda: sub.count("reading") >= spooled_while_absent, timeout_s=30)
        # the subscriber may see a message before the gateway has handled its PUBACK: wait for the count
        sub.wait_for("the backlog's PUBACKs", lambda: metric(
            registry, "citystream_gateway_replayed_total", stream="reading") >= spooled_while_absent, timeout_s=30)

        mosquitto.server(settings).stop()
        time.sleep(OUTAGE_S)
        during = metric(registry, "citystream_gateway_spooled_total", stream="reading") - spooled_while_absent
        assert during > 100, "the outage must have made readings wait in the spool"
        assert metric(registry, "citystream_gateway_connected") == 0
        broker_up(settings)
        captured = metric(registry, "citystream_gateway_captured_total", stream="reading")
        sub.wait_for("everything captured before the restart", lambda: len(
            {m.doc()["seq"] for m in sub.received() if m.stream == "reading"}) >= captured, timeout_s=60)
        gw.stop()
        stopped = True
        assert gw.spool.count == 0, "the spool was not drained at stop"
        for stream in ("reading", "frame"):
            total = metric(registry, "citystream_gateway_captured_total", stream=stream)
            sub.wait_for(f"every {stream}", lambda s=stream, n=total: len(
                {m.doc()["seq"] for m in sub.received() if m.stream == s}) >= n, timeout_s=30)
    finally:
        if not stopped:
            gw.stop(drain_s=0)
        sub.close()
    msgs = sub.received()
    readings = assert_complete_and_ordered(msgs, "reading")
    frames = assert_complete_and_ordered(msgs, "frame")
    assert readings == metric(registry, "citystream_gateway_captured_total", stream="reading")
    assert frames == metric(registry, "citystream_gateway_captured_total", stream="frame") > 0
    assert metric(registry, "citystream_gateway_replayed_total", stream="reading") >= spooled_while_absent + during
    assert metric(registry, "citystream_gateway_dropped_total", reason="spool_full") == 0


def write_config(settings: Settings, path: Path) -> Path:
    path.write_text(yaml.safe_dump(dump_settings(settings), allow_unicode=True))
    return path


def spool_rows(path: Path) -> list[tuple[str, int, bytes]]:
    """(stream, seq, payload) of the rows in a gateway spool file, read from outside the gateway."""
    if not path.exists():
        return []
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        return [(r[0], int(r[1]), bytes(r[2])) for r in
                conn.execute("SELECT stream, seq, payload FROM spool ORDER BY id").fetchall()]
    except sqlite3.OperationalError:  # the gateway has not created the table yet
        return []
    finally:
        conn.close()


def gateway_process(config: Path, log: Path, *args: str) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "citystream", "gateway", "--config", str(config), *args],
                                cwd=REPO, stdout=out, stderr=subprocess.STDOUT)


def test_kill_9_loses_nothing_spooled_and_seq_continues(stack_home: Path, unique: str, tmp_path: Path) -> None:
    settings = stack_settings(stack_home, unique, tmp_path, gateway_id="gw-k9", connect_timeout_s=0.2,
                              reconnect_min_s=0.2, reconnect_max_s=0.5, sensors=[
                                  {"device_id": "pm-1", "metric": "pm25_ug_m3", "interval_s": 0.02},
                                  {"device_id": "wl-1", "metric": "water_level_cm", "interval_s": 0.05}],
                              cameras=[{"type": "simulated", "device_id": "cam-1", "width": 320, "height": 180,
                                        "fps": 5, "scenes": 2, "face_every": 0}])
    settings = provisioned(settings)  # the gateway process logs in as gw-k9 itself
    offline = settings.model_copy(update={"mqtt": settings.mqtt.model_copy(update={"port": free_port()})})
    spool_file = tmp_path / "state" / "gw-k9.sqlite3"

    log = tmp_path / "gateway.log"
    proc = gateway_process(write_config(offline, tmp_path / "offline.yaml"), log)
    deadline = time.monotonic() + 60
    while sum(1 for r in spool_rows(spool_file) if r[0] == "frame") < 3 or len(spool_rows(spool_file)) < 100:
        assert proc.poll() is None, log.read_text()
        assert time.monotonic() < deadline, "the gateway did not spool"
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    before = spool_rows(spool_file)
    before_ids = {orjson.loads(p)["event_id"] for s, _, p in before if s == "reading"}
    last_seq = max(seq for s, seq, _ in before if s == "reading")

    sub = Subscriber(settings, f"{unique}/#")
    try:
        online = gateway_process(write_config(settings, tmp_path / "online.yaml"), log, "--duration", "2")
        assert online.wait(timeout=60) == 0, log.read_text()
        sub.wait_for("the offline status", lambda: any(
            m.stream == "status" and m.doc()["state"] == "offline" for m in sub.received()), timeout_s=20)
    finally:
        sub.close()
    msgs = sub.received()
    readings = [m.doc() for m in msgs if m.stream == "reading"]
    assert before_ids <= {r["event_id"] for r in readings}, "a reading spooled before kill -9 was lost"
    seqs = {r["seq"] for r in readings}
    assert min(seqs) == 0
    assert max(seqs) > last_seq + 20, "the restarted gateway did not continue capturing"
    assert assert_complete_and_ordered(msgs, "reading") == max(seqs) + 1  # seq continued: no hole, no reuse
    assert assert_complete_and_ordered(msgs, "frame") >= 3
    assert spool_rows(spool_file) == []
