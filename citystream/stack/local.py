"""``citystream stack up | down | status``: the local development stack.

``up`` starts Mosquitto and Kafka (each only if not already running), creates topics, and writes
``<home>/citystream.yaml``: the settings every other process uses to reach this stack (generated
passwords included, mode 0600). ClickHouse is embedded (``chdb://<home>/clickhouse``): nothing to
start; the process that opens it (the sink) owns it. ``down`` stops only processes whose pid files
this stack wrote; data stays under ``<home>`` across ``down``/``up``.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

import orjson
import yaml

from citystream.settings import Settings, dump_settings
from citystream.stack import kafka, keys, mosquitto
from citystream.stack.mosquitto import TEST_PUBLISHER

USERS = ("bridge", TEST_PUBLISHER)  # the test publisher's login exists only with stack.test_publisher
KAFKA_USERS = ("kafka-broker", "kafka-citystream")  # SCRAM users (stack.kafka_scram)
SECRETS = (*USERS, *KAFKA_USERS, "pseudonym")  # passwords, and the local HMAC key for plate pseudonyms


def credentials(home: Path) -> dict[str, str]:
    """The generated secrets of this stack home: MQTT passwords and a pseudonym key (created once, mode 0600)."""
    path = home / "credentials.json"
    if path.exists():
        creds: dict[str, str] = orjson.loads(path.read_bytes())
        if all(u in creds for u in SECRETS):
            return creds
    else:
        creds = {}
    tenant_keys = {name: key for name, key in creds.items() if name.startswith(keys.PREFIX)}  # rotate-key's
    creds = {**{u: creds.get(u) or (keys.new_key() if u == "pseudonym" else secrets.token_urlsafe(18))
                for u in SECRETS}, **tenant_keys}
    home.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(orjson.dumps(creds))
    return creds


def local_settings(settings: Settings) -> Settings:
    """The given settings pointed at this local stack (ports, users, embedded ClickHouse path)."""
    home = settings.stack.home.resolve()
    creds = keys.ensure_tenants(home, credentials(home), keys.known_tenants(settings, home))  # a key per tenant
    data = dump_settings(settings)
    data["stack"]["home"] = str(home)
    data["stack"]["kafka_jars"] = str(settings.stack.kafka_jars.resolve())
    data["mqtt"].update(host="127.0.0.1", port=settings.stack.mqtt_port, username="bridge", password=creds["bridge"])
    if settings.stack.mqtt_tls:  # clients verify the broker against the stack's own CA
        data["mqtt"]["tls"] = {"ca_file": str(mosquitto.tls_dir(settings) / "ca.crt")}
    if settings.stack.test_publisher:  # tests of malformed traffic; gateways use provisioned identities
        data["gateway"].update(username=TEST_PUBLISHER, password=creds[TEST_PUBLISHER])
    elif data["gateway"]["username"] in (TEST_PUBLISHER, "gateway"):  # no such login here (any more)
        data["gateway"].update(username="", password="")
    if not data["gateway"]["state_dir"].startswith("/"):
        data["gateway"]["state_dir"] = str(home / "gateway")
    data["kafka"]["bootstrap"] = f"127.0.0.1:{settings.stack.kafka_port}"
    if settings.stack.kafka_scram:
        data["kafka"].update(security_protocol="SASL_PLAINTEXT", sasl_mechanism=kafka.SCRAM,
                             sasl_username="citystream", sasl_password=creds["kafka-citystream"])
    configured = data["worker"]["pseudonym_keys"]
    if not configured or keys.managed(configured, creds, home):  # the stack's keys, unless an operator set some
        data["worker"]["pseudonym_keys"] = keys.current(creds)
    if settings.clickhouse.dsn.startswith("chdb://"):
        data["clickhouse"]["dsn"] = f"chdb://{home / 'clickhouse'}"
    return Settings(**data)


def config_file(settings: Settings) -> Path:
    """Where ``up`` writes the settings for processes using this stack."""
    return settings.stack.home.resolve() / "citystream.yaml"


def up(settings: Settings) -> dict[str, Any]:
    """Start what is not running, create topics, write the stack's settings file; returns status."""
    local = local_settings(settings)
    creds = credentials(local.stack.home)
    mosquitto.up(local, creds)
    kafka.up(local, creds)
    write_config_file(local)
    return status(local)


def write_config_file(local: Settings) -> Path:
    """Write the stack's settings file (mode 0600: it holds the generated secrets, keys revealed)."""
    path = config_file(local)
    body = yaml.safe_dump(dump_settings(local, exclude_defaults=True), sort_keys=False, allow_unicode=True)
    keys.write_private(path, ("# Written by 'citystream stack up': settings for processes using the local stack.\n"
                              + body).encode())
    return path


def rotate_key(settings: Settings, tenant: str) -> dict[str, Any]:
    """A new pseudonym key for ``tenant`` (``*``: every tenant without its own); see citystream.stack.keys."""
    home = settings.stack.home.resolve()
    return keys.rotate(home, credentials(home), tenant, config_file(settings))


def down(settings: Settings) -> dict[str, bool]:
    """Stop the processes this stack started (Kafka first so it can flush cleanly)."""
    return {"kafka": kafka.server(settings).stop(), "mqtt": mosquitto.server(settings).stop()}


def status(settings: Settings) -> dict[str, Any]:
    """Where each server is and whether it runs (the ``status --json`` contract)."""
    local = local_settings(settings)
    mq, kf = mosquitto.server(local).pid(), kafka.server(local).pid()
    return {
        "home": str(local.stack.home),
        "config": str(config_file(local)),
        "mqtt": {"host": local.mqtt.host, "port": local.mqtt.port, "running": mq is not None, "pid": mq},
        "kafka": {"bootstrap": local.kafka.bootstrap, "running": kf is not None, "pid": kf},
        "clickhouse": {"dsn": local.clickhouse.dsn, "database": local.clickhouse.database, "embedded":
                       local.clickhouse.dsn.startswith("chdb://")},
    }
