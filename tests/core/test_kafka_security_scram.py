"""End to end on a real Kafka whose client listener is SASL_PLAINTEXT + SCRAM-SHA-512 (``stack.kafka_scram``).

The stack's own ``up`` must get through (its topic admin logs in), librdkafka clients built from
``client_config()`` and the aiokafka clients Faust builds from ``broker_credentials`` produce and
consume, and a wrong password or no SASL at all is refused.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import yaml
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from citystream.schemas.topics import RAW_READINGS
from citystream.settings import Settings, load_settings
from tests.conftest import REPO, citystream, free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def scram_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """A stack of its own with the SCRAM listener; yields the settings ``stack up`` wrote."""
    home = tmp_path_factory.mktemp("scram")
    base = home / "base.yaml"
    base.write_text(yaml.safe_dump({"stack": {
        "home": str(home / "home"), "mqtt_port": free_port(), "kafka_port": free_port(),
        "kafka_controller_port": free_port(), "kafka_jars": str(REPO / ".cache" / "kafka"), "kafka_heap": "384m",
        "kafka_scram": True}}))
    try:
        up = citystream("stack", "up", "--json", config=base, timeout=240, check=False)
        assert up.returncode == 0, up.stderr  # topics apply ran through the SASL listener
        yield load_settings(Path(orjson.loads(up.stdout)["config"]))
    finally:
        citystream("stack", "down", config=base, check=False)


def _roundtrip_librdkafka(s: Settings) -> bytes | None:
    marker = uuid.uuid4().hex.encode()
    producer = Producer({**s.kafka.client_config(), "enable.idempotence": True})
    producer.produce(RAW_READINGS, key=marker, value=marker)
    assert producer.flush(30) == 0
    consumer = Consumer({**s.kafka.client_config(), "group.id": f"scram-{marker.decode()}",
                         "auto.offset.reset": "earliest"})
    consumer.subscribe([RAW_READINGS])
    try:
        for _ in range(120):
            msg = consumer.poll(0.5)
            if msg is not None and not msg.error() and msg.key() == marker:
                return msg.value()
        return None
    finally:
        consumer.close()


async def _roundtrip_faust_clients(s: Settings) -> bytes | None:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

    from citystream.processors.kafka_auth import broker_credentials

    auth = credentials_to_aiokafka_auth(broker_credentials(s.kafka))  # what Faust passes its own clients
    marker = uuid.uuid4().hex.encode()
    producer = AIOKafkaProducer(bootstrap_servers=s.kafka.bootstrap, **auth)
    await producer.start()
    try:
        await producer.send_and_wait(RAW_READINGS, marker, key=marker)
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(RAW_READINGS, bootstrap_servers=s.kafka.bootstrap, group_id=f"scram-{marker.decode()}",
                                auto_offset_reset="earliest", **auth)
    await consumer.start()
    try:
        for _ in range(60):
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                for record in records:
                    if record.key == marker:
                        return record.value
        return None
    finally:
        await consumer.stop()


def test_stack_clients_and_faust_clients_log_in_with_scram(scram_stack: Settings) -> None:
    s = scram_stack
    assert (s.kafka.security_protocol, s.kafka.sasl_mechanism, s.kafka.sasl_username) == (
        "SASL_PLAINTEXT", "SCRAM-SHA-512", "citystream")
    assert _roundtrip_librdkafka(s) is not None
    assert asyncio.run(_roundtrip_faust_clients(s)) is not None


def test_a_wrong_password_or_no_sasl_is_refused(scram_stack: Settings) -> None:
    s = scram_stack
    wrong = s.kafka.model_copy(update={"sasl_password": s.kafka.sasl_password.__class__("not-the-password")})
    plain = s.kafka.model_copy(update={"security_protocol": "PLAINTEXT"})
    for kafka in (wrong, plain):
        admin = AdminClient({**kafka.client_config(), "socket.timeout.ms": 5000})
        with pytest.raises(KafkaException):
            admin.list_topics(timeout=8)
    assert AdminClient(s.kafka.client_config()).list_topics(timeout=15).topics, "the right login still works"


def test_every_stage_runs_on_the_scram_listener(scram_stack: Settings, tmp_path: Path) -> None:
    """``citystream demo`` on the SCRAM stack: sink, bridge and worker (Faust) all log in; nothing lost."""
    from citystream.stack.kafka import ensure_topics
    from tests.conftest import write_settings

    own = scram_stack.model_copy(update={  # topics of its own: the tests above left probe records in raw.readings
        "clickhouse": scram_stack.clickhouse.model_copy(update={"dsn": f"chdb://{tmp_path / 'clickhouse'}"}),
        "kafka": scram_stack.kafka.model_copy(update={"topic_prefix": "demo."})})
    ensure_topics(own)
    config = write_settings(own, tmp_path / "citystream.yaml")
    res = citystream("demo", "--duration", "8", "--gateways", "1", "--cameras", "1", "--sensors", "2", "--rate", "4",
                     "--json", config=config, check=False, timeout=600)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    verdict = orjson.loads(res.stdout.strip().splitlines()[-1])
    assert verdict["published"] > 0 and verdict["stored"] == verdict["published"]
    assert (verdict["lost"], verdict["duplicates"], verdict["dlq"]) == (0, 0, 0)
    assert verdict["stage_exit_codes"] == {"sink": 0, "bridge": 0, "worker": 0}
    # the worker's Faust consumer read the readings and committed its offsets, through SCRAM
    topic = own.kafka.topic(RAW_READINGS)
    group = Consumer({**own.kafka.client_config(), "group.id": own.kafka.topic(own.worker.app_id)})
    try:
        parts = AdminClient(own.kafka.client_config()).list_topics(topic, timeout=15).topics[topic].partitions
        committed = group.committed([TopicPartition(topic, p) for p in parts], timeout=15)
    finally:
        group.close()
    assert sum(max(tp.offset, 0) for tp in committed) >= verdict["published"]
