"""One identity per gateway on the real Mosquitto: ``citystream gateway provision | revoke | list``.

A private Mosquitto (started through the stack's code, like ``test_gateway_faults.own_broker``) is
provisioned through the real command line while it runs; every denial is the broker's answer
(CONNACK / PUBACK / SUBACK reason 135, "not authorized"). The bridge's own check that an event's
tenant/gateway match its topic (``topic_mismatch`` dead letter) is tested on the validator.
"""

from __future__ import annotations

import stat
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as mqtt
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion
from prometheus_client import CollectorRegistry

from citystream.ingest.bridge.validate import Accepted, Rejected, Validator
from citystream.ingest.gateway.gateway import Gateway
from citystream.ingest.gateway.publisher import GatewayMetrics
from citystream.ingest.provision import login_accepted
from citystream.schemas.events import make_event_id
from citystream.schemas.topics import bridge_confirm_topic, bridge_ready_topic, mqtt_topic
from citystream.settings import Settings
from citystream.settings.bridge import BridgeSettings
from citystream.settings.gateway import GatewaySettings
from citystream.stack import mosquitto
from tests.conftest import REPO, citystream, free_port
from tests.ingest import malformed as mf
from tests.ingest.test_gateway_publish import Subscriber, assert_complete_and_ordered

ROOT = "idt"
USERS = {"gateway": "retired-shared-secret", "bridge": "bridge-secret"}  # "gateway": no such login any more
NOT_AUTHORIZED = 135


class Broker:
    """A private running Mosquitto and the settings file the CLI uses for it."""

    def __init__(self, settings: Settings, config: Path) -> None:
        self.settings = settings
        self.config = config
        self.port = settings.stack.mqtt_port

    def provision(self, tenant: str, gateway: str, *extra: str) -> dict[str, str]:
        res = citystream("gateway", "provision", "--tenant", tenant, "--gateway", gateway, "--json", *extra,
                         config=self.config)
        cred: dict[str, str] = orjson.loads(res.stdout.strip().splitlines()[-1])
        return cred

    def revoke(self, tenant: str, gateway: str) -> None:
        citystream("gateway", "revoke", "--tenant", tenant, "--gateway", gateway, config=self.config)

    def listed(self) -> list[dict[str, str]]:
        rows: list[dict[str, str]] = orjson.loads(citystream("gateway", "list", "--json", config=self.config).stdout)
        return rows


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """A private Mosquitto with the bridge login (``USERS``); the CLI reaches it through a settings file."""
    home = tmp_path_factory.mktemp("idbroker")
    port = free_port()
    doc = {"stack": {"home": str(home / "mq"), "mqtt_port": port},
           "mqtt": {"port": port, "username": "bridge", "password": USERS["bridge"], "topic_root": ROOT},
           "metrics": {"port": 0}}
    settings = Settings.model_validate(doc)
    config = home / "settings.yaml"
    config.write_text(yaml.safe_dump(doc))
    mosquitto.up(settings, USERS)
    try:
        yield Broker(settings, config)
    finally:
        mosquitto.server(settings).stop()


class Client:
    """A connected MQTT v5 client that records PUBACK/SUBACK reason codes and received messages."""

    def __init__(self, port: int, username: str | None, password: str | None) -> None:
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"idt-{uuid.uuid4().hex[:8]}",
                                  protocol=mqtt.MQTTv5)
        if username is not None:
            self.client.username_pw_set(username, password)
        self.connack: int | None = None
        self.disconnected = threading.Event()
        self.acks: dict[int, int] = {}
        self.granted: dict[int, list[int]] = {}
        self.messages: list[tuple[str, bytes]] = []
        self._event = threading.Event()
        self.client.on_connect = self._on_connect
        self.client.on_publish = lambda c, u, mid, reason, p: self._record(self.acks, mid, reason.value)
        self.client.on_subscribe = lambda c, u, mid, reasons, p: self._record(
            self.granted, mid, [r.value for r in reasons])
        self.client.on_message = lambda c, u, msg: self.messages.append((msg.topic, bytes(msg.payload)))
        self.client.on_disconnect = lambda *args: self.disconnected.set()
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert self._event.wait(5), "no CONNACK"

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        self.connack = reason.value
        self._event.set()

    def _record(self, into: dict[int, Any], mid: int, value: Any) -> None:
        into[mid] = value

    @property
    def accepted(self) -> bool:
        return self.connack == 0

    def publish(self, topic: str, payload: bytes = b"{}") -> int:
        """QoS 1 publish; the broker's PUBACK reason (0 or 16 = taken, 135 = not authorized)."""
        info = self.client.publish(topic, payload, qos=1)
        return int(_wait_for(lambda: self.acks.get(info.mid)))

    def subscribe(self, topic: str) -> int:
        """The SUBACK reason for one filter (0 = granted QoS 0, 135 = not authorized)."""
        _, mid = self.client.subscribe(topic, qos=0)
        return int(_wait_for(lambda: self.granted.get(mid))[0])

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _wait_for(get: Any, timeout_s: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while (value := get()) is None:
        assert time.monotonic() < deadline, "no answer from the broker"
        time.sleep(0.01)
    return value


def device_topic(tenant: str, gateway: str, root: str = ROOT) -> str:
    return mqtt_topic(root, tenant, gateway, "sensor", "pm-1", "reading")


@pytest.mark.integration
def test_provision_json_contract_and_a_private_registry(broker: Broker) -> None:
    cred = broker.provision("pathum-pao", "gw-json")
    assert set(cred) == {"username", "password", "topic_prefix"}
    assert cred["username"] == "pathum-pao.gw-json" and cred["topic_prefix"] == f"{ROOT}/pathum-pao/gw-json"
    assert len(cred["password"]) >= 24
    home = broker.settings.stack.home
    registry = (home / "gateways.json").read_text()
    assert cred["password"] not in registry and "pathum-pao" in registry, "only the hash is stored"
    for path in (home / "gateways.json", home / "mosquitto" / "passwd", home / "mosquitto" / "acl"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert {"username": cred["username"], "topic_prefix": cred["topic_prefix"]}.items() <= next(
        r for r in broker.listed() if r["username"] == cred["username"]).items()
    again = citystream("gateway", "provision", "--tenant", "pathum-pao", "--gateway", "gw-json", "--json",
                       config=broker.config, check=False)
    assert again.returncode == 1 and "already provisioned" in again.stderr
    bad = citystream("gateway", "provision", "--tenant", "Pathum/PAO", "--gateway", "gw-1", config=broker.config,
                     check=False)
    assert bad.returncode == 2
    rotated = broker.provision("pathum-pao", "gw-json", "--rotate")
    assert login_accepted("127.0.0.1", broker.port, cred["username"], rotated["password"]) is True
    assert login_accepted("127.0.0.1", broker.port, cred["username"], cred["password"]) is False


@pytest.mark.integration
def test_anonymous_and_wrong_password_are_refused(broker: Broker) -> None:
    cred = broker.provision("nakhon-rangsit", "gw-pw")
    anonymous = Client(broker.port, None, None)
    wrong = Client(broker.port, cred["username"], cred["password"] + "x")
    right = Client(broker.port, cred["username"], cred["password"])
    try:
        assert anonymous.connack == NOT_AUTHORIZED
        assert wrong.connack == NOT_AUTHORIZED
        assert right.accepted
    finally:
        for c in (anonymous, wrong, right):
            c.close()


@pytest.mark.integration
def test_a_gateway_publishes_only_its_own_device_streams(broker: Broker) -> None:
    a = broker.provision("nakhon-rangsit", "gw-a")
    b = broker.provision("nakhon-rangsit", "gw-b")
    watcher = Client(broker.port, "bridge", USERS["bridge"])
    assert watcher.subscribe(f"{ROOT}/#") == 0
    gw_a = Client(broker.port, a["username"], a["password"])
    try:
        own = device_topic("nakhon-rangsit", "gw-a")
        assert gw_a.publish(own, b"own") == 0
        assert gw_a.publish(mqtt_topic(ROOT, "nakhon-rangsit", "gw-a", "camera", "cam-1", "frame")) == 0
        assert gw_a.publish(mqtt_topic(ROOT, "nakhon-rangsit", "gw-a", "gateway", "gw-a", "status")) == 0
        refused = {
            "as gateway B": device_topic("nakhon-rangsit", "gw-b"),
            "under another tenant": device_topic("pathum-pao", "gw-a"),
            "under another root": device_topic("nakhon-rangsit", "gw-a", root="city"),
            "outside the topic map (deeper)": own + "/x",
            "outside the topic map (stream)": mqtt_topic(ROOT, "nakhon-rangsit", "gw-a", "sensor", "pm-1", "frame"),
            "a forged bridge announcement": bridge_ready_topic(ROOT),
            "a forged confirmation": bridge_confirm_topic(ROOT, "nakhon-rangsit", "gw-b"),
        }
        answers = {what: gw_a.publish(topic, b"forged") for what, topic in refused.items()}
        assert answers == dict.fromkeys(refused, NOT_AUTHORIZED)
        time.sleep(0.3)
        assert sorted(t for t, _ in watcher.messages if "/_bridge/" not in t) == sorted([
            own, mqtt_topic(ROOT, "nakhon-rangsit", "gw-a", "camera", "cam-1", "frame"),
            mqtt_topic(ROOT, "nakhon-rangsit", "gw-a", "gateway", "gw-a", "status")]), "only A's own topics arrived"
        # reading: only its own confirmations and the bridges' announcement (Mosquitto 2.0 grants any
        # subscription and applies the read ACL to each message it would deliver)
        mine = [bridge_confirm_topic(ROOT, "nakhon-rangsit", "gw-a"), bridge_ready_topic(ROOT)]
        others = [bridge_confirm_topic(ROOT, "nakhon-rangsit", "gw-b"), device_topic("nakhon-rangsit", "gw-b"),
                  bridge_confirm_topic(ROOT, "pathum-pao", "gw-a")]
        for topic in [*mine, *others, f"{ROOT}/#"]:
            gw_a.subscribe(topic)
        gw_b = Client(broker.port, b["username"], b["password"])
        assert gw_b.publish(device_topic("nakhon-rangsit", "gw-b")) in (0, 16)
        gw_b.close()
        for topic in [others[0], others[2], *mine]:
            assert watcher.publish(topic, b"{}") in (0, 16)
        _wait_for(lambda: True if len(gw_a.messages) >= len(mine) else None)
        time.sleep(0.3)
        assert {t for t, _ in gw_a.messages} == set(mine)  # (copies: overlapping subscriptions)
    finally:
        gw_a.close()
        watcher.close()


@pytest.mark.integration
def test_a_revoked_gateway_is_disconnected_and_refused(broker: Broker) -> None:
    cred = broker.provision("pathum-pao", "gw-gone")
    connected = Client(broker.port, cred["username"], cred["password"])
    try:
        assert connected.accepted
        broker.revoke("pathum-pao", "gw-gone")
        assert connected.disconnected.wait(5), "a connected revoked gateway is disconnected by the reload"
        assert login_accepted("127.0.0.1", broker.port, cred["username"], cred["password"]) is False
        assert all(r["username"] != cred["username"] for r in broker.listed())
        again = citystream("gateway", "revoke", "--tenant", "pathum-pao", "--gateway", "gw-gone",
                           config=broker.config, check=False)
        assert again.returncode == 1 and "not provisioned" in again.stderr
        assert login_accepted("127.0.0.1", broker.port, "bridge", USERS["bridge"]) is True
    finally:
        connected.close()


@pytest.mark.integration
def test_there_is_no_shared_gateway_login(broker: Broker) -> None:
    """``stack up`` writes only the bridge's login (the old shared ``gateway`` one is gone, even given a password)."""
    base = broker.settings.stack.home / "mosquitto"
    users = {line.partition(":")[0] for line in (base / "passwd").read_text().splitlines() if line}
    assert {u for u in users if "." not in u} == {"bridge"}, users
    acl = (base / "acl").read_text()
    assert "user gateway" not in acl and "user test-publisher" not in acl
    assert [line for line in acl.splitlines() if line.strip() == "topic write #"] == []
    assert login_accepted("127.0.0.1", broker.port, "gateway", USERS["gateway"]) is False


@pytest.mark.integration
def test_the_simulator_publishes_with_one_identity_per_simulated_gateway(broker: Broker, tmp_path: Path) -> None:
    """Each simulated gateway logs in as itself (provisioned for the run, revoked after); only its own topics."""
    from citystream.ingest.gateway.simulator import simulate

    settings = broker.settings.model_copy(update={"gateway": GatewaySettings(
        tenant="pathum-pao", state_dir=tmp_path / "sim", wait_for_bridge=False, confirm=False)})
    watcher = Client(broker.port, "bridge", USERS["bridge"])
    assert watcher.subscribe(f"{ROOT}/#") == 0
    try:
        stats = simulate(settings, gateways=3, cameras=0, sensors=2, rate=5.0, duration=2.0, prefix="simid")
    finally:
        time.sleep(0.3)
        watcher.close()
    assert stats.published.get("reading", 0) > 0 and stats.dropped == {}, stats
    prefixes = {"/".join(t.split("/")[:3]) for t, _ in watcher.messages if "/_bridge/" not in t}
    assert prefixes == {f"{ROOT}/pathum-pao/simid-gw-00{i}" for i in range(3)}
    assert not [r for r in broker.listed() if r["username"].startswith("pathum-pao.simid-")], "revoked after the run"


@pytest.mark.integration
def test_a_provisioned_gateway_survives_a_broker_restart(broker: Broker) -> None:
    cred = broker.provision("pathum-pao", "gw-restart")
    mosquitto.server(broker.settings).stop()
    mosquitto.up(broker.settings, USERS)  # what stack up does: files rendered again from the registry
    assert login_accepted("127.0.0.1", broker.port, cred["username"], cred["password"]) is True
    assert login_accepted("127.0.0.1", broker.port, "bridge", USERS["bridge"]) is True


@pytest.mark.integration
def test_a_provisioned_gateway_waits_for_the_bridge_and_reads_its_confirmations(
        broker: Broker, tmp_path: Path) -> None:
    cred = broker.provision("nakhon-rangsit", "gw-real")
    gw_settings = GatewaySettings.model_validate({
        "tenant": "nakhon-rangsit", "gateway_id": "gw-real", "username": cred["username"],
        "password": cred["password"], "state_dir": str(tmp_path / "state"), "heartbeat_s": 1.0,
        "sensors": [{"device_id": "pm-1", "metric": "pm25_ug_m3", "interval_s": 0.05}]})
    registry = CollectorRegistry()
    gw = Gateway(broker.settings.mqtt, gw_settings, GatewayMetrics(registry))
    gw.start(connect_timeout_s=5)
    sub: Subscriber | None = None
    try:
        time.sleep(1.0)
        assert gw.publisher.connected and not gw.publisher.bridge_ready, "no bridge announced yet: it waits"
        assert gw.spool.count > 0
        sub = Subscriber(broker.settings, f"{ROOT}/+/+/+/+/+")  # announces readiness and confirms, like the bridge
        _wait_for(lambda: True if gw.publisher.bridge_ready else None, timeout_s=10)
        time.sleep(1.0)
    finally:
        gw.stop(drain_s=10)
        if sub is not None:
            sub.close()
    assert gw.spool.count == 0, "every row was confirmed: the gateway read its confirmation topic"
    assert sub is not None and assert_complete_and_ordered(sub.received(), "reading") > 0


@pytest.mark.unit
def test_the_bridge_dead_letters_an_event_whose_tenant_or_gateway_differs_from_its_topic() -> None:
    validator = Validator(BridgeSettings(), "city")
    assert isinstance(validator.check(*_reading_on(mf.TENANT, mf.GATEWAY, mf.TENANT, mf.GATEWAY)), Accepted)
    for tenant, gateway in (("pathum-pao", mf.GATEWAY), (mf.TENANT, "gw-other"), ("pathum-pao", "gw-other")):
        result = validator.check(*_reading_on(tenant, gateway, mf.TENANT, mf.GATEWAY))
        assert isinstance(result, Rejected) and result.reason == "topic_mismatch", (tenant, gateway, result)
        status = {**mf.status_doc(1), "tenant": mf.TENANT, "gateway_id": mf.GATEWAY}
        topic = mqtt_topic("city", tenant, gateway, "gateway", mf.GATEWAY, "status")
        result = validator.check(topic, orjson.dumps(status))
        assert isinstance(result, Rejected) and result.reason == "topic_mismatch", (tenant, gateway, result)
        msg = mf.frame("city", 1)
        result = validator.check(msg.topic.replace(f"/{mf.TENANT}/{mf.GATEWAY}/", f"/{tenant}/{gateway}/"),
                                 msg.payload, msg.props)
        assert isinstance(result, Rejected) and result.reason == "topic_mismatch", (tenant, gateway, result)


def _reading_on(topic_tenant: str, topic_gateway: str, tenant: str, gateway: str) -> tuple[str, bytes]:
    """A reading of ``tenant/gateway`` published on the topic of ``topic_tenant/topic_gateway``."""
    doc = {**mf.reading_doc(7, gateway=gateway, tenant=tenant), "event_id": make_event_id(gateway, "reading", 7)}
    return device_topic(topic_tenant, topic_gateway, root="city"), orjson.dumps(doc)


@pytest.mark.unit
def test_the_compose_acl_is_the_generated_one_without_patterns() -> None:
    text = (REPO / "deploy" / "compose" / "mosquitto" / "acl").read_text()
    assert text == mosquitto.render_acl([]), "regenerate it: python -c 'from citystream.stack.mosquitto import ...'"
    assert not [line for line in text.splitlines() if line.startswith("pattern")], "no %u/%c patterns"
