"""One record to Kafka, acknowledged: for the CLI and the console, which write rarely and must know it landed.

The streaming stages keep their own long-lived producers; this opens an idempotent ``acks=all``
producer, sends one record and waits for Kafka's acknowledgement, raising with the reason otherwise.
"""

from __future__ import annotations

from confluent_kafka import Producer

from citystream.settings import Settings


class NotAcknowledged(RuntimeError):
    """Kafka did not acknowledge the record in time, or refused it; the message says which."""


def produce_acked(settings: Settings, base_topic: str, key: str, value: bytes | None,
                  timeout_s: float = 30.0) -> None:
    """Send one record (``value=None`` is a tombstone) to the tenant-prefixed topic and wait for its ack."""
    errors: list[str] = []

    def on_delivery(err: object, _msg: object) -> None:
        if err is not None:
            errors.append(str(err))

    producer = Producer({**settings.kafka.client_config(), "enable.idempotence": True, "acks": "all"})
    producer.produce(settings.kafka.topic(base_topic), key=key.encode(), value=value, on_delivery=on_delivery)
    if producer.flush(timeout_s) != 0:
        raise NotAcknowledged(f"{base_topic}: not acknowledged by Kafka within {timeout_s:g} s")
    if errors:
        raise NotAcknowledged(f"{base_topic}: Kafka refused the record: {errors[0]}")
