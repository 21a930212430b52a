"""The bridge as real processes: ``kill -9`` and restart, Kafka down for 20 s, two replicas on one share.

Every test ends with the same check: every ``event_id`` published is in Kafka (duplicates allowed,
none missing). Publishers are QoS 1 MQTT v5 clients with a persistent session (paho resends what the
broker did not ack after a reconnect).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from citystream.schemas.topics import RAW_READINGS
from citystream.settings import Settings, load_settings
from citystream.stack import kafka as kafka_stack
from tests.conftest import REPO, citystream, free_port
from tests.ingest import malformed as mf

INFLIGHT = "citystream_bridge_inflight_messages"
INFLIGHT_BYTES = "citystream_bridge_inflight_bytes"


def wait_until(what: str, cond: Callable[[], bool], timeout_s: float = 60.0, every_s: float = 0.2) -> None:
    """Poll ``cond()`` until it is true; fail with ``what`` when time runs out."""
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(every_s)


def assert_none_missing(settings: Settings, stream: mf.Stream, timeout_s: float = 90.0) -> int:
    """Every published event id is in raw readings; returns the number of duplicates seen."""
    want = stream.event_ids
    seen = mf.collect_ids(settings, settings.kafka.topic(RAW_READINGS), want, timeout_s)
    missing = want - seen.keys()
    assert not missing, f"{len(missing)} of {len(want)} event ids never reached Kafka"
    assert seen.keys() == want, "records that were never published"
    return sum(seen.values()) - len(want)


@pytest.mark.integration
@pytest.mark.fault
def test_kill_9_mid_stream_and_restart_loses_nothing(settings: Settings, tmp_path: Path) -> None:
    bridge = mf.BridgeProcess(settings, tmp_path, f"bridge-{uuid.uuid4().hex[:6]}", track_sequences=False)
    stream = mf.Stream(settings, count=3000, per_tick=25, tick_s=0.02).start()
    try:
        wait_until("the bridge to ack part of the stream", lambda: bridge.metric("citystream_bridge_acked_total") > 300)
        bridge.kill()
        sent_at_kill = stream.sent
        assert sent_at_kill + 200 < len(stream.msgs), "kill came after the stream ended: not mid-stream"
        # publishing goes on while the bridge is dead: Mosquitto queues for its session
        wait_until("the stream to go on while the bridge is dead", lambda: stream.sent >= sent_at_kill + 200)
        bridge.start()
        assert "session_present=True" in bridge.log_file.read_text(), "the restart must resume the persistent session"
        stream.finish()
        duplicates = assert_none_missing(settings, stream)  # confirmed but not yet acked at the kill: twice
        print(f"kill -9 after {sent_at_kill} of {len(stream.msgs)} published: none missing, {duplicates} duplicates")
        assert bridge.stop() == 0, bridge.tail()
    finally:
        bridge.stop()


@pytest.mark.integration
def test_two_replicas_split_a_shared_subscription_without_loss(settings: Settings, tmp_path: Path) -> None:
    group = f"{uuid.uuid4().hex[:6]}"
    replicas = [mf.BridgeProcess(settings, tmp_path, f"bridge-{group}-{i}", track_sequences=False) for i in (0, 1)]
    try:
        stream = mf.Stream(settings, count=2000, per_tick=50, tick_s=0.02).start()
        stream.finish()
        assert assert_none_missing(settings, stream) == 0, "no fault, so no duplicates"
        acked = [r.metric("citystream_bridge_acked_total") for r in replicas]
        assert sum(acked) == len(stream.msgs)
        assert min(acked) > 0.2 * len(stream.msgs), f"load not split: {acked}"
    finally:
        codes = [r.stop() for r in replicas]
    assert codes == [0, 0], "\n".join(r.tail() for r in replicas)


# --- Kafka down: a stack of our own, so the session's Kafka keeps serving the other tests ----------------
@pytest.fixture
def own_stack(tmp_path: Path) -> Iterator[tuple[Path, Settings]]:
    """A second Mosquitto + Kafka on free ports for this test only; yields (base config, settings)."""
    base = tmp_path / "base.yaml"
    home = tmp_path / "home"
    base.write_text(yaml.safe_dump({"stack": {
        "home": str(home), "mqtt_port": free_port(), "kafka_port": free_port(),
        "kafka_controller_port": free_port(), "kafka_jars": str(REPO / ".cache" / "kafka"), "kafka_heap": "384m",
        "test_publisher": True}}))  # the test streams publish as the test publisher, like the session stack's
    try:
        res = citystream("stack", "up", config=base, check=False, timeout=180)
        assert res.returncode == 0, f"stack up failed:\n{res.stdout}\n{res.stderr}"
        unique = "t" + uuid.uuid4().hex[:10]
        yield base, load_settings(home / "citystream.yaml", {"mqtt.topic_root": unique,
                                                             "bridge.share_group": f"{unique}-bridge"})
    finally:
        citystream("stack", "down", config=base, check=False)


@pytest.mark.integration
@pytest.mark.fault
@pytest.mark.slow
def test_kafka_down_20s_bounded_inflight_and_no_loss(own_stack: tuple[Path, Settings], tmp_path: Path) -> None:
    base, settings = own_stack
    max_inflight, max_bytes = 100, 8 * 1024
    # keepalive 5 s: the outage lasts several keepalive periods, so the blocked bridge also loses its MQTT
    # connection (paho cannot read the PINGRESP) and must come back to its session by itself
    bridge = mf.BridgeProcess(settings, tmp_path, "bridge-kd", keepalive_s=5, track_sequences=False,
                              max_inflight=max_inflight, max_inflight_bytes=max_bytes, delivery_timeout_ms=4000)
    stream = mf.Stream(settings, count=5000, per_tick=10, tick_s=0.05).start()
    largest = max(len(m.payload) for m in stream.msgs)
    try:
        wait_until("Kafka to confirm part of the stream", lambda: bridge.metric("citystream_bridge_acked_total") > 100)
        kafka_stack.server(settings).kill()
        acked_at_outage = bridge.metric("citystream_bridge_acked_total")
        peak, peak_bytes, sent_before = 0.0, 0.0, stream.sent
        end = time.monotonic() + 20
        while time.monotonic() < end:
            m = bridge.metrics()
            peak = max(peak, m[(INFLIGHT, ())])
            peak_bytes = max(peak_bytes, m[(INFLIGHT_BYTES, ())])
            time.sleep(0.5)
        m = bridge.metrics()
        received = sum(v for (name, _), v in m.items() if name == "citystream_bridge_received_total")
        acked = m[("citystream_bridge_acked_total", ())]
        published_during = stream.sent - sent_before
        # nothing is acked while Kafka cannot confirm it (a few confirmations may have been on the wire)
        state = (f"acked {acked_at_outage} -> {acked} while Kafka was down, received {received}, "
                 f"peak in flight {peak} / {peak_bytes} B, published during outage {published_during}")
        assert acked - acked_at_outage <= max_inflight, state
        # the bridge stopped reading: what it took but could not ack is bounded, Mosquitto holds the rest
        assert published_during > 5 * max_inflight, "the outage must outlast the window many times over"
        assert received - acked <= max_inflight, state
        assert 0 < peak <= max_inflight, state
        assert 0 < peak_bytes <= max_bytes + largest, state
        assert m[("citystream_bridge_blocked_seconds_total", ())] > 5
        assert m[("citystream_bridge_produce_retries_total", ())] > 0, "records timed out and were produced again"
        res = citystream("stack", "up", config=base, check=False, timeout=180)
        assert res.returncode == 0, f"kafka restart failed:\n{res.stdout}\n{res.stderr}"
        stream.finish()
        assert_none_missing(settings, stream, timeout_s=120)
        assert bridge.proc is not None and bridge.proc.poll() is None, "the bridge must recover by itself"
        assert bridge.stop() == 0, bridge.tail()
    finally:
        bridge.stop()
