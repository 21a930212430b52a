"""The local stack on real servers: status contract, auth, topics (``topics apply``), data surviving down/up."""

from __future__ import annotations

import stat
import uuid
from pathlib import Path

import orjson
import paho.mqtt.client as mqtt
import pytest
import yaml
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import ConfigResource, ResourceType

from citystream.schemas.topics import ALERTS, DAY_MS, DLQ, RAW_FRAMES, RAW_READINGS, TOPICS
from citystream.settings import Settings, dump_settings, load_settings
from citystream.stack.kafka import admin
from tests.conftest import REPO, citystream, free_port

pytestmark = pytest.mark.integration


def _connect_rc(port: int, username: str | None, password: str | None) -> int:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    if username is not None:
        client.username_pw_set(username, password)
    result: list[int] = []
    client.on_connect = lambda c, u, f, rc, p: result.append(rc.value)
    client.connect("127.0.0.1", port)
    for _ in range(50):
        client.loop(0.1)
        if result:
            break
    client.disconnect()
    return result[0] if result else -1


def test_status_json_contract_and_topics(stack_home: Path) -> None:
    doc = orjson.loads(citystream("stack", "status", "--json", config=stack_home).stdout)
    assert {"host", "port"} <= set(doc["mqtt"]) and doc["mqtt"]["running"]
    assert "bootstrap" in doc["kafka"] and doc["kafka"]["running"]
    assert doc["clickhouse"]["dsn"].startswith("chdb://")
    s = load_settings(stack_home)
    md = admin(s).list_topics(timeout=10)
    for spec in TOPICS:
        assert len(md.topics[spec.name].partitions) == spec.partitions


def test_mosquitto_requires_a_password(stack_home: Path) -> None:
    s = load_settings(stack_home)
    assert _connect_rc(s.mqtt.port, None, None) != 0
    assert _connect_rc(s.mqtt.port, "bridge", "wrong") != 0
    assert _connect_rc(s.mqtt.port, s.mqtt.username, s.mqtt.password.get_secret_value()) == 0


def test_down_keeps_data_and_up_is_idempotent(tmp_path: Path) -> None:
    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump({"stack": {
        "home": str(tmp_path / "home"), "mqtt_port": free_port(), "kafka_port": free_port(),
        "kafka_controller_port": free_port(), "kafka_jars": str(REPO / ".cache" / "kafka"), "kafka_heap": "384m"}}))
    try:
        citystream("stack", "up", config=base, timeout=180)
        first = orjson.loads(citystream("stack", "status", "--json", config=base).stdout)
        again = orjson.loads(citystream("stack", "up", "--json", config=base, timeout=180).stdout)
        assert again["kafka"]["pid"] == first["kafka"]["pid"], "second up must reuse the running broker"
        s = load_settings(tmp_path / "home" / "citystream.yaml")
        marker = uuid.uuid4().hex.encode()
        producer = Producer(s.kafka.client_config())
        producer.produce(RAW_READINGS, key=b"k", value=marker)
        assert producer.flush(30) == 0
        citystream("stack", "down", config=base)
        assert not orjson.loads(citystream("stack", "status", "--json", config=base).stdout)["kafka"]["running"]
        citystream("stack", "up", config=base, timeout=180)
        consumer = Consumer({**s.kafka.client_config(), "group.id": "t", "auto.offset.reset": "earliest"})
        consumer.subscribe([RAW_READINGS])
        seen = []
        for _ in range(60):
            msg = consumer.poll(0.5)
            if msg is not None and not msg.error():
                seen.append(msg.value())
                break
        consumer.close()
        assert seen == [marker]
    finally:
        citystream("stack", "down", config=base, check=False)


def _topic_state(s: Settings, name: str) -> tuple[int, int, dict[str, str]]:
    """(partitions, replication factor, configs) of one topic on the cluster."""
    client = admin(s)
    meta = client.list_topics(timeout=10).topics[name]
    resource = ConfigResource(ResourceType.TOPIC, name)
    entries = client.describe_configs([resource])[resource].result(timeout=10)
    return (len(meta.partitions), len(meta.partitions[0].replicas), {k: e.value for k, e in entries.items()})


def test_topics_apply_creates_updates_and_is_idempotent(stack_home: Path, unique: str, tmp_path: Path) -> None:
    s = load_settings(stack_home, {"kafka.topic_prefix": f"{unique}."})
    config = tmp_path / "citystream.yaml"
    config.write_text(yaml.safe_dump(dump_settings(s)))

    dry = orjson.loads(citystream("topics", "apply", "--dry-run", "--json", config=config).stdout)
    assert dry["dry_run"] and dry["changed"] == len(TOPICS)
    assert all(t["actions"] == ["create"] for t in dry["topics"])
    assert not any(n.startswith(f"{unique}.") for n in admin(s).list_topics(timeout=10).topics), "dry run created"

    done = orjson.loads(citystream("topics", "apply", "--json", config=config).stdout)
    assert {t["topic"] for t in done["topics"]} == {f"{unique}.{t.name}" for t in TOPICS}
    for spec in TOPICS:
        parts, rf, conf = _topic_state(s, f"{unique}.{spec.name}")
        assert (parts, rf) == (spec.partitions, 1)
        assert conf["cleanup.policy"] == ("compact" if spec.compacted else "delete")
        # the dlq keeps (frame) dead letters no longer than raw frames: tests/security/test_image_topics.py
        assert conf["retention.ms"] == str(DAY_MS if spec.name == DLQ else spec.retention_ms)
        assert conf["max.message.bytes"] == str(spec.max_message_bytes)

    # settings change: more partitions for frames, longer alert retention, a smaller max for readings
    s2 = load_settings(config, {"kafka.topics": {
        RAW_FRAMES: {"partitions": 8}, ALERTS: {"retention_ms": 90 * DAY_MS},
        RAW_READINGS: {"max_message_bytes": 65536, "partitions": 2}}})
    config.write_text(yaml.safe_dump(dump_settings(s2)))
    res = citystream("topics", "apply", config=config)
    assert "add_partitions" in res.stdout and "alter_config" in res.stdout
    assert "Kafka cannot remove partitions" in res.stdout  # raw.readings asks for 2 of 6: kept
    assert _topic_state(s, f"{unique}.{RAW_FRAMES}")[0] == 8
    assert _topic_state(s, f"{unique}.{ALERTS}")[2]["retention.ms"] == str(90 * DAY_MS)
    parts, _, conf = _topic_state(s, f"{unique}.{RAW_READINGS}")
    assert parts == 6 and conf["max.message.bytes"] == "65536"

    again = orjson.loads(citystream("topics", "apply", "--json", config=config).stdout)
    assert again["changed"] == 0, again

    # a replication factor the cluster cannot hold fails before anything is created
    config.write_text(yaml.safe_dump({**dump_settings(s2), "kafka": {
        **dump_settings(s2)["kafka"], "topic_prefix": f"{unique}x.", "replication_factor": 3}}))
    bad = citystream("topics", "apply", config=config, check=False)
    assert bad.returncode == 1 and "replication factor 3" in bad.stderr and "has 1" in bad.stderr
    assert not any(n.startswith(f"{unique}x.") for n in admin(s).list_topics(timeout=10).topics)


def test_the_worker_prepares_its_internal_topics_through_the_topic_admin(settings: Settings) -> None:
    from citystream.processors.app import internal_topics, prepare_topics

    prepare_topics(settings)
    names = admin(settings).list_topics(timeout=10).topics
    for name, (parts, conf) in internal_topics(settings).items():
        assert name in names and len(names[name].partitions) == parts
        assert _topic_state(settings, name)[2]["cleanup.policy"] == conf.get("cleanup.policy", "delete")


def test_stack_up_writes_a_real_private_pseudonym_key(stack_home: Path) -> None:
    """The issue's finding: the settings file once held the masked form '**********' as the key."""
    text = stack_home.read_text()
    key = yaml.safe_load(text)["worker"]["pseudonym_keys"]["*"]
    assert "*****" not in text and len(key) >= 43 and len(set(key)) > 10, "a 256-bit random key, not a mask"
    creds = orjson.loads((stack_home.parent / "credentials.json").read_bytes())
    assert key == creds["pseudonym"]
    for path in (stack_home, stack_home.parent / "credentials.json"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert load_settings(stack_home).worker.pseudonym_key("any-tenant") == key.encode()


@pytest.mark.unit
def test_pseudonym_keys_are_per_stack_per_tenant_and_rotate(tmp_path: Path) -> None:
    from citystream.processors.plates.plates import pseudonym
    from citystream.stack import local

    def written(home: str, **overrides: object) -> Path:
        s = Settings.model_validate({"stack": {"home": str(tmp_path / home)}, **overrides})
        return local.write_config_file(local.local_settings(s))

    config = written("a")  # "other-town" is no tenant the stack knows: it uses the "*" key
    first = load_settings(config).worker.pseudonym_key("other-town")
    assert first is not None and first != load_settings(written("b")).worker.pseudonym_key("other-town")
    again = local.local_settings(load_settings(config))  # `stack up` reading its own file keeps the key
    assert again.worker.pseudonym_key("other-town") == first

    done = orjson.loads(citystream("stack", "rotate-key", "--json", config=config).stdout)
    rotated = load_settings(config).worker.pseudonym_key("other-town")
    assert rotated is not None and rotated != first and done["tenant"] == "*" and done["previous"]
    assert local.local_settings(load_settings(config)).worker.pseudonym_key("other-town") == rotated, \
        "the next stack up keeps the rotated key"
    retired_file = Path(done["retired_file"])
    assert stat.S_IMODE(retired_file.stat().st_mode) == 0o600
    assert [r["key"].encode() for r in orjson.loads(retired_file.read_bytes())] == [first]
    assert pseudonym("กข1234", "กรุงเทพมหานคร", first) != pseudonym("กข1234", "กรุงเทพมหานคร", rotated)

    citystream("stack", "rotate-key", "--tenant", "pathum-pao", config=config)
    s = load_settings(config)
    own, other = s.worker.pseudonym_key("pathum-pao"), s.worker.pseudonym_key("other-town")
    assert own is not None and own not in (other, first) and other == rotated, "a tenant key of its own"
    assert local.local_settings(s).worker.pseudonym_key("pathum-pao") == own
    assert "*****" not in config.read_text() and stat.S_IMODE(config.stat().st_mode) == 0o600

    operator = local.local_settings(load_settings(config, {"worker.pseudonym_keys": {"*": "k" * 44}}))
    assert operator.worker.pseudonym_key("pathum-pao") == b"k" * 44, "keys an operator configured are kept"
    bad = citystream("stack", "rotate-key", "--tenant", "Bad/Tenant", config=config, check=False)
    assert bad.returncode == 2 and "must be" in bad.stderr
