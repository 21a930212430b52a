"""Kafka security reaches every client: one ``KafkaSettings`` -> librdkafka config and the worker's Faust app."""

from __future__ import annotations

import ast
import datetime as dt
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pydantic import ValidationError

from citystream.settings import BridgeSettings, KafkaSettings, Settings

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("citystream", "ingest", "processors", "sinks", "schemas", "bench")
CLIENTS = {"Producer", "Consumer", "AdminClient"}


def _client_pem(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed client certificate and its key (PEM files)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "citystream-worker")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now)
            .not_valid_after(now + dt.timedelta(days=1)).sign(key, hashes.SHA256()))
    cert_path, key_path = tmp_path / "client.crt", tmp_path / "client.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def _secure(tmp_path: Path, protocol: str = "SASL_SSL") -> Settings:
    cert, key = _client_pem(tmp_path)
    return Settings.model_validate({"kafka": {
        "bootstrap": "k1:9093,k2:9093", "security_protocol": protocol, "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_username": "citystream", "sasl_password": "s3cret", "ssl_ca_location": str(cert),
        "ssl_certificate_location": str(cert), "ssl_key_location": str(key)}})


def test_librdkafka_clients_get_every_security_option(tmp_path: Path) -> None:
    from citystream.ingest.bridge.kafka import producer_config

    s = _secure(tmp_path)
    wanted = {"bootstrap.servers": "k1:9093,k2:9093", "security.protocol": "SASL_SSL",
              "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": "citystream", "sasl.password": "s3cret",
              "ssl.ca.location": str(s.kafka.ssl_ca_location),
              "ssl.certificate.location": str(s.kafka.ssl_certificate_location),
              "ssl.key.location": str(s.kafka.ssl_key_location)}
    assert wanted.items() <= s.kafka.client_config().items()
    bridge = producer_config(s.kafka, BridgeSettings(), "b-1", "lz4", 1_000_000)  # the bridge's producers
    assert wanted.items() <= bridge.items()


def test_the_faust_app_gets_sasl_scram_over_verified_tls(tmp_path: Path) -> None:
    import faust
    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

    from citystream.processors.app import make_faust_app

    s = _secure(tmp_path).model_copy(update={"worker": Settings().worker.model_copy(
        update={"data_dir": tmp_path / "worker"})})
    app = make_faust_app(s)
    creds = app.conf.broker_credentials
    assert isinstance(creds, faust.SASLCredentials)
    assert (creds.username, creds.password, creds.mechanism.value) == ("citystream", "s3cret", "SCRAM-SHA-512")
    auth = credentials_to_aiokafka_auth(creds)  # what Faust hands its aiokafka consumer and producer
    assert auth["security_protocol"] == "SASL_SSL" and auth["sasl_mechanism"] == "SCRAM-SHA-512"
    context = auth["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert [str(u) for u in app.conf.broker] == ["kafka://k1:9093", "kafka://k2:9093"]


@pytest.mark.parametrize(("protocol", "kind", "aiokafka_protocol"), [
    ("PLAINTEXT", None, "PLAINTEXT"), ("SSL", "SSLCredentials", "SSL"),
    ("SASL_PLAINTEXT", "SASLCredentials", "SASL_PLAINTEXT"), ("SASL_SSL", "SASLCredentials", "SASL_SSL")])
def test_each_protocol_maps_to_faust(tmp_path: Path, protocol: str, kind: str | None, aiokafka_protocol: str) -> None:
    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

    from citystream.processors.kafka_auth import broker_credentials

    creds = broker_credentials(_secure(tmp_path, protocol).kafka)
    assert (type(creds).__name__ if creds is not None else None) == kind
    assert credentials_to_aiokafka_auth(creds)["security_protocol"] == aiokafka_protocol


def test_incomplete_security_settings_fail_at_start(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="needs sasl_mechanism and sasl_username"):
        KafkaSettings(security_protocol="SASL_SSL")
    with pytest.raises(ValidationError, match="go together"):
        KafkaSettings(security_protocol="SSL", ssl_certificate_location=tmp_path / "c.crt")
    with pytest.raises(ValidationError, match="sasl_mechanism"):
        KafkaSettings(security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-1", sasl_username="u")


def _spreads_client_config(call: ast.Call, scope: ast.AST) -> bool:
    """Whether a client's config dict spreads ``client_config()`` (directly, via a local, or producer_config)."""
    def from_config(node: ast.expr) -> bool:
        text = ast.unparse(node)
        if "client_config()" in text or "producer_config(" in text:
            return True
        if isinstance(node, ast.Name):  # a local assigned from client_config() in the same function
            return any(isinstance(a, ast.Assign) and any(isinstance(t, ast.Name) and t.id == node.id
                                                         for t in a.targets) and from_config(a.value)
                       for a in ast.walk(scope))
        return False
    config = call.args[0] if call.args else None
    if isinstance(config, ast.Dict):
        return any(key is None and from_config(value) for key, value in zip(config.keys, config.values, strict=True))
    return config is not None and from_config(config)


def test_every_confluent_kafka_client_is_built_from_client_config() -> None:
    """Bridge, sink, worker's watchlists, CLI admin, status, chaos, bench: no client with a config of its own."""
    seen, bad = 0, []
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            tree = ast.parse(path.read_text(), str(path))
            for func in [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]:
                for call in [n for n in ast.walk(func) if isinstance(n, ast.Call)]:
                    name = call.func.id if isinstance(call.func, ast.Name) else getattr(call.func, "attr", "")
                    if name in CLIENTS:
                        seen += 1
                        if not _spreads_client_config(call, func):
                            bad.append(f"{path.relative_to(REPO)}:{call.lineno}")
    assert seen >= 15, seen  # the scan found the clients (bridge, sink, frames archive, topics, ...)
    assert bad == []


def test_the_helm_chart_mounts_a_kafka_client_certificate_into_the_settings(tmp_path: Path) -> None:
    from citystream.settings import load_settings
    from tests.deploy.test_helm import by_kind, render

    docs = render(sets=("tls.kafka.secretName=city-kafka-user", "tls.kafka.clientCert=true",
                        "settings.kafka.security_protocol=SSL"))
    text = by_kind(docs, "ConfigMap")["cs-settings"]["data"]["citystream.yaml"]
    (tmp_path / "citystream.yaml").write_text(text)
    kafka = load_settings(tmp_path / "citystream.yaml").kafka
    assert (str(kafka.ssl_certificate_location), str(kafka.ssl_key_location)) == (
        "/etc/citystream/tls/kafka/tls.crt", "/etc/citystream/tls/kafka/tls.key")
    worker = by_kind(docs, "StatefulSet")["cs-worker"]["spec"]["template"]["spec"]
    items = {v["name"]: v for v in worker["volumes"]}["tls-kafka"]["secret"]["items"]
    assert [i["path"] for i in items] == ["ca.crt", "tls.crt", "tls.key"]
