"""MQTT over TLS on the real Mosquitto with the stack's own CA (``stack.mqtt_tls``).

A private Mosquitto is started through the stack's code with the TLS listener; a provisioned gateway
(the real ``Gateway``) publishes over TLS and the bridge login receives; a client that does not
trust the stack's CA, and a plaintext client, are refused.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import stat
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion
from prometheus_client import CollectorRegistry

from citystream.ingest import mqtt_tls
from citystream.ingest.gateway.gateway import Gateway
from citystream.ingest.gateway.publisher import GatewayMetrics
from citystream.ingest.provision import login_accepted, provision
from citystream.settings import Settings, TlsSettings
from citystream.settings.gateway import GatewaySettings
from citystream.stack import certs, local, mosquitto
from tests.conftest import free_port

ROOT = "tls"
BRIDGE_PW = "bridge-secret"


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """A private Mosquitto whose only listener is TLS; settings as ``stack up`` writes them for it."""
    home = tmp_path_factory.mktemp("tlsbroker") / "home"
    port = free_port()
    settings = Settings.model_validate({
        "stack": {"home": str(home), "mqtt_port": port, "mqtt_tls": True},
        "mqtt": {"port": port, "username": "bridge", "password": BRIDGE_PW, "topic_root": ROOT,
                 "tls": {"ca_file": str(home / "tls" / "ca.crt")}},
        "metrics": {"port": 0}})
    mosquitto.up(settings, {"bridge": BRIDGE_PW})
    try:
        yield settings
    finally:
        mosquitto.server(settings).stop()


class Watcher:
    """The bridge login over TLS, subscribed to the root: what arrived."""

    def __init__(self, settings: Settings) -> None:
        self.topics: list[str] = []
        self.subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"w-{uuid.uuid4().hex[:6]}",
                                  protocol=mqtt.MQTTv5)
        self.client.username_pw_set("bridge", BRIDGE_PW)
        mqtt_tls.configure(self.client, settings.mqtt)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(f"{ROOT}/#", qos=1)
        self.client.on_subscribe = lambda *a: self.subscribed.set()
        self.client.on_message = lambda c, u, m: self.topics.append(m.topic)
        self.client.connect("127.0.0.1", settings.mqtt.port)
        self.client.loop_start()
        assert self.subscribed.wait(10), "no SUBACK over TLS"

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.mark.integration
def test_a_provisioned_gateway_publishes_over_tls(tls_broker: Settings, tmp_path: Path) -> None:
    cred = provision(tls_broker, "nakhon-rangsit", "gw-tls")  # waits for the login over TLS too
    gw_settings = GatewaySettings.model_validate({
        "tenant": "nakhon-rangsit", "gateway_id": "gw-tls", "username": cred["username"],
        "password": cred["password"], "state_dir": str(tmp_path / "state"), "wait_for_bridge": False,
        "confirm": False, "sensors": [{"device_id": "pm-1", "metric": "pm25_ug_m3", "interval_s": 0.05}]})
    watcher = Watcher(tls_broker)
    registry = CollectorRegistry()
    gw = Gateway(tls_broker.mqtt, gw_settings, GatewayMetrics(registry))
    gw.start(connect_timeout_s=10)
    try:
        time.sleep(1.0)
        sock = gw.publisher.client.socket()
        assert isinstance(sock, ssl.SSLSocket) and sock.version() in ("TLSv1.2", "TLSv1.3")
    finally:
        gw.stop(drain_s=10)
        time.sleep(0.3)
        watcher.close()
    published = registry.get_sample_value("citystream_gateway_published_total", {"stream": "reading"}) or 0
    readings = [t for t in watcher.topics if t.endswith("/reading")]
    assert published > 0 and len(readings) >= published
    assert set(readings) == {f"{ROOT}/nakhon-rangsit/gw-tls/sensor/pm-1/reading"}


@pytest.mark.integration
def test_clients_that_do_not_verify_against_the_stack_ca_or_skip_tls_are_refused(tls_broker: Settings) -> None:
    untrusting = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    untrusting.username_pw_set("bridge", BRIDGE_PW)
    untrusting.tls_set()  # the system's trust store, which does not hold the stack's CA
    with pytest.raises(ssl.SSLCertVerificationError):
        untrusting.connect("127.0.0.1", tls_broker.mqtt.port)
    # plain MQTT on the TLS listener: no CONNACK, whatever the password
    assert login_accepted("127.0.0.1", tls_broker.mqtt.port, "bridge", BRIDGE_PW, timeout_s=3) is None
    assert login_accepted("127.0.0.1", tls_broker.mqtt.port, "bridge", BRIDGE_PW, timeout_s=5,
                          mqtt_settings=tls_broker.mqtt) is True
    assert login_accepted("127.0.0.1", tls_broker.mqtt.port, "bridge", "wrong", timeout_s=5,
                          mqtt_settings=tls_broker.mqtt) is False


@pytest.mark.integration
def test_another_ca_or_a_certificate_for_another_name_is_refused(tls_broker: Settings, tmp_path: Path) -> None:
    """The client checks the chain and the broker's name."""
    other = certs.ensure(tmp_path / "other", ["127.0.0.1"])  # a CA of its own: the chain does not verify
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    mqtt_tls.configure(client, tls_broker.mqtt.model_copy(update={"tls": TlsSettings(ca_file=other.ca_cert)}))
    with pytest.raises(ssl.SSLCertVerificationError):
        client.connect("127.0.0.1", tls_broker.mqtt.port)
    # the stack's CA, but a server certificate for another name, served by a TLS socket on loopback
    stack_tls = tls_broker.stack.home / "tls"
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    for name in ("ca.crt", "ca.key"):
        (wrong / name).write_bytes((stack_tls / name).read_bytes())
    misnamed = certs.ensure(wrong, ["broker.example"])
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(misnamed.server_cert, misnamed.server_key)
    with socket.create_server(("127.0.0.1", 0)) as listener:
        threading.Thread(target=_serve_once, args=(listener, server_ctx), daemon=True).start()
        client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        mqtt_tls.configure(client, tls_broker.mqtt)
        with pytest.raises(ssl.SSLCertVerificationError, match="match"):
            client.connect("127.0.0.1", listener.getsockname()[1])


def _serve_once(listener: socket.socket, ctx: ssl.SSLContext) -> None:
    conn, _ = listener.accept()
    with contextlib.suppress(OSError), ctx.wrap_socket(conn, server_side=True):
        pass


def _sans(path: Path) -> list[str]:
    from cryptography import x509

    san = x509.load_pem_x509_certificate(path.read_bytes()).extensions.get_extension_for_class(
        x509.SubjectAlternativeName).value
    return [str(v) for v in san.get_values_for_type(x509.IPAddress)] + san.get_values_for_type(x509.DNSName)


@pytest.mark.unit
def test_certificates_are_private_made_once_and_renewed_for_new_names(tmp_path: Path) -> None:
    first = certs.ensure(tmp_path / "tls", ["127.0.0.1", "localhost"])
    assert stat.S_IMODE((tmp_path / "tls").stat().st_mode) == 0o700
    for key in (tmp_path / "tls" / "ca.key", first.server_key):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, key
    ca, server = first.ca_cert.read_bytes(), first.server_cert.read_bytes()
    again = certs.ensure(tmp_path / "tls", ["127.0.0.1", "localhost"])
    assert (again.ca_cert.read_bytes(), again.server_cert.read_bytes()) == (ca, server), "kept when current"
    renamed = certs.ensure(tmp_path / "tls", ["127.0.0.1", "mqtt.city.example"])
    assert renamed.ca_cert.read_bytes() == ca and renamed.server_cert.read_bytes() != server
    assert "mqtt.city.example" in _sans(renamed.server_cert)


@pytest.mark.unit
def test_stack_settings_point_clients_at_the_tls_listener_and_the_ca(tmp_path: Path) -> None:
    plain = local.local_settings(Settings.model_validate({"stack": {"home": str(tmp_path / "a")}}))
    assert plain.mqtt.tls is None
    tls = local.local_settings(Settings.model_validate({"stack": {"home": str(tmp_path / "b"), "mqtt_tls": True}}))
    assert tls.mqtt.tls is not None and tls.mqtt.tls.ca_file == (tmp_path / "b" / "tls" / "ca.crt").resolve()




@pytest.mark.integration
@pytest.mark.slow
def test_stack_up_with_tls_carries_simulated_gateways_through_the_bridge_into_kafka(tmp_path: Path) -> None:
    """``stack up`` with mqtt_tls: simulated gateways (provisioned) -> TLS -> bridge -> Kafka, all confirmed."""
    from citystream.ingest.gateway.simulator import simulate
    from citystream.schemas.topics import RAW_READINGS
    from citystream.settings import load_settings
    from citystream.stack.kafka import ensure_topics
    from tests.conftest import REPO, citystream
    from tests.ingest import malformed as mf
    from tests.ingest.test_bridge import Running

    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump({"stack": {
        "home": str(tmp_path / "home"), "mqtt_port": free_port(), "kafka_port": free_port(),
        "kafka_controller_port": free_port(), "kafka_jars": str(REPO / ".cache" / "kafka"), "kafka_heap": "384m",
        "mqtt_tls": True}}))
    try:
        citystream("stack", "up", config=base, timeout=240)
        s = load_settings(tmp_path / "home" / "citystream.yaml", {
            "kafka.topic_prefix": "tls.", "mqtt.topic_root": "tlse2e", "bridge.share_group": "tls-bridge",
            "gateway.state_dir": str(tmp_path / "gw")})
        assert s.mqtt.tls is not None and s.mqtt.tls.ca_file is not None and s.mqtt.tls.ca_file.exists()
        ensure_topics(s)
        bridge = Running(s)
        try:
            stats = simulate(s, gateways=2, cameras=0, sensors=2, rate=5.0, duration=3.0, prefix="tlse2e")
        finally:
            bridge.stop()
        assert stats.published.get("reading", 0) > 0 and stats.left_in_spool == 0, stats  # confirmed over TLS
        stored = mf.consume(s, s.kafka.topic(RAW_READINGS), stats.published["reading"])
        assert len(stored) >= stats.published["reading"]
    finally:
        citystream("stack", "down", config=base, check=False)
