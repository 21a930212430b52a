"""How a process reaches MQTT, Kafka and ClickHouse."""

from __future__ import annotations

import logging
import ssl
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from citystream.schemas.topics import TOPICS
from citystream.settings.base import Section, TlsSettings


class MqttSettings(Section):
    """Where the MQTT broker is and how this process logs in."""

    host: str = "127.0.0.1"
    port: int = Field(1883, ge=1, le=65535)
    username: str = "bridge"
    password: SecretStr = SecretStr("")
    topic_root: str = Field("city", pattern=r"^[A-Za-z0-9_-]+$")
    keepalive_s: int = Field(30, ge=5)
    tls: TlsSettings | None = None


class TopicOverride(Section):
    """Per-topic changes to the topic map's defaults (``schemas/topics.py``); unset fields keep the default."""

    partitions: int | None = Field(None, ge=1, description="more partitions allow more consumers; never decreased")
    retention_ms: int | None = Field(None, ge=-1, description="-1 = keep forever")
    max_message_bytes: int | None = Field(None, ge=1024)


class KafkaSettings(Section):
    """Where Kafka is and how every client logs in.

    One source for every client: ``client_config()`` (librdkafka: bridge, sink, CLI, admin) and
    ``ssl_context()`` with ``security_protocol`` / ``sasl_*`` (the worker's Faust app, see
    ``processors.kafka_auth``). TLS verifies the broker against ``ssl_ca_location`` (the system's
    trust store when unset) including its host name; ``ssl_certificate_location`` /
    ``ssl_key_location`` present a client certificate (mutual TLS).

    The topic keys (``replication_factor``, ``min_insync_replicas``, ``topics``) are what
    ``citystream topics apply`` creates and updates; compaction stays as the topic map defines it.
    """

    bootstrap: str = "127.0.0.1:9092"
    topic_prefix: str = Field("", pattern=r"^[A-Za-z0-9._-]*$")
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_ca_location: Path | None = None
    ssl_certificate_location: Path | None = None
    ssl_key_location: Path | None = None
    ssl_key_password: SecretStr | None = None
    replication_factor: int = Field(1, ge=1, le=16, description="of every topic created (3 on a production "
                                    "cluster; 1 only for a single-broker development stack)")
    min_insync_replicas: int | None = Field(None, ge=1, description="topic min.insync.replicas (with acks=all: "
                                            "how many replicas must have a record); None = the broker's default")
    topics: dict[str, TopicOverride] = Field(default_factory=dict,
                                             description="topic map name (without prefix) -> overrides")

    @field_validator("topics")
    @classmethod
    def _known_topics(cls, value: dict[str, TopicOverride]) -> dict[str, TopicOverride]:
        known = [t.name for t in TOPICS]
        unknown = sorted(set(value) - set(known))
        if unknown:
            raise ValueError(f"unknown topic(s) {', '.join(unknown)}; topics: {', '.join(known)}")
        return value

    @model_validator(mode="after")
    def _security_complete(self) -> KafkaSettings:
        if self.security_protocol.startswith("SASL_") and not (self.sasl_mechanism and self.sasl_username):
            raise ValueError(f"security_protocol {self.security_protocol} needs sasl_mechanism and sasl_username "
                             "(and sasl_password, e.g. from CITYSTREAM_KAFKA__SASL_PASSWORD)")
        if (self.ssl_certificate_location is None) != (self.ssl_key_location is None):
            raise ValueError("ssl_certificate_location and ssl_key_location go together (a client certificate)")
        return self

    @model_validator(mode="after")
    def _isr_within_replicas(self) -> KafkaSettings:
        if self.min_insync_replicas is not None and self.min_insync_replicas > self.replication_factor:
            raise ValueError(f"min_insync_replicas ({self.min_insync_replicas}) must not exceed "
                             f"replication_factor ({self.replication_factor})")
        return self

    def client_config(self) -> dict[str, Any]:
        """librdkafka settings shared by producers, consumers and the admin client."""
        # librdkafka's own log lines go through the project's logging (formatted, rate-limited) instead of stderr
        conf: dict[str, Any] = {"bootstrap.servers": self.bootstrap, "security.protocol": self.security_protocol,
                                "logger": logging.getLogger("librdkafka")}
        if self.sasl_mechanism:
            conf["sasl.mechanism"] = self.sasl_mechanism
        if self.sasl_username:
            conf["sasl.username"] = self.sasl_username
        if self.sasl_password:
            conf["sasl.password"] = self.sasl_password.get_secret_value()
        if self.ssl_ca_location:
            conf["ssl.ca.location"] = str(self.ssl_ca_location)
        if self.ssl_certificate_location and self.ssl_key_location:
            conf["ssl.certificate.location"] = str(self.ssl_certificate_location)
            conf["ssl.key.location"] = str(self.ssl_key_location)
        if self.ssl_key_password:
            conf["ssl.key.password"] = self.ssl_key_password.get_secret_value()
        return conf

    def ssl_context(self) -> ssl.SSLContext | None:
        """A verifying TLS context for SSL / SASL_SSL (None for the plaintext protocols)."""
        if not self.security_protocol.endswith("SSL"):
            return None
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH,
                                             cafile=str(self.ssl_ca_location) if self.ssl_ca_location else None)
        if self.ssl_certificate_location and self.ssl_key_location:
            password = self.ssl_key_password.get_secret_value() if self.ssl_key_password else None
            context.load_cert_chain(str(self.ssl_certificate_location), str(self.ssl_key_location), password)
        return context

    def topic(self, base: str) -> str:
        """A topic of the topic map with this cluster's prefix."""
        return f"{self.topic_prefix}{base}"


class ClickHouseSettings(Section):
    """The analytics store: ``chdb://PATH`` (embedded, one owning process) or ``http(s)://host:port``."""

    dsn: str = Field("chdb://.citystream/clickhouse", pattern=r"^(chdb|https?)://.+")
    database: str = Field("citystream", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    username: str = "default"
    password: SecretStr = SecretStr("")
