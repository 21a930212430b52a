"""The local development stack (``citystream stack``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator

from citystream.settings.base import Section

DEFAULT_HOME = Path(".citystream")


class StackSettings(Section):
    """Local Mosquitto and Kafka processes and where their data lives."""

    home: Path = DEFAULT_HOME
    mqtt_port: int = Field(1883, ge=1, le=65535)
    kafka_port: int = Field(9092, ge=1, le=65535)
    kafka_controller_port: int = Field(9093, ge=1, le=65535)
    kafka_jars: Path = Path(".cache/kafka")
    kafka_heap: str = Field("768m", pattern=r"^[0-9]+[mg]$")
    mqtt_max_queued_messages: int = Field(
        2_000_000, ge=1000, description="per-session QoS 1 queue in Mosquitto; beyond it messages for a blocked "
        "bridge are dropped while publishers still got their PUBACK: size as ingest rate x longest Kafka outage")
    mqtt_max_queued_bytes: int = Field(1024**3, ge=1024 * 1024, le=2**31 - 1,
                                       description="the same limit in bytes (Mosquitto reads a 32-bit int)")
    start_timeout_s: float = Field(60.0, gt=0)
    mqtt_tls: bool = Field(False, description="Mosquitto's listener speaks MQTT over TLS with a certificate from a CA "
                           "the stack generates (<home>/tls); off keeps plain MQTT on loopback")
    kafka_scram: bool = Field(False, description="Kafka's client listener as SASL_PLAINTEXT with SCRAM-SHA-512 users "
                              "made at storage format (set before the first up, or remove <home>/kafka)")
    test_publisher: bool = Field(False, description="also create the 'test-publisher' MQTT login, which may publish "
                                 "anything (tests of malformed traffic) and becomes gateway.username; never on a "
                                 "stack real gateways use: gateways log in with provisioned identities")

    @model_validator(mode="after")
    def _distinct_ports(self) -> StackSettings:
        """MQTT, Kafka and the Kafka controller each need a port of their own."""
        ports = [self.mqtt_port, self.kafka_port, self.kafka_controller_port]
        if len(set(ports)) != len(ports):
            raise ValueError(f"mqtt_port, kafka_port and kafka_controller_port must differ, got {ports}")
        return self
