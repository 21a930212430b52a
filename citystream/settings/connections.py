"""How a process reaches MQTT, Kafka and ClickHouse."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr

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


class KafkaSettings(Section):
    """Where Kafka is; security options pass through to librdkafka as they are."""

    bootstrap: str = "127.0.0.1:9092"
    topic_prefix: str = Field("", pattern=r"^[A-Za-z0-9._-]*$")
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_ca_location: Path | None = None

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
        return conf

    def topic(self, base: str) -> str:
        """A topic of the topic map with this cluster's prefix."""
        return f"{self.topic_prefix}{base}"


class ClickHouseSettings(Section):
    """The analytics store: ``chdb://PATH`` (embedded, one owning process) or ``http(s)://host:port``."""

    dsn: str = Field("chdb://.citystream/clickhouse", pattern=r"^(chdb|https?)://.+")
    database: str = Field("citystream", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    username: str = "default"
    password: SecretStr = SecretStr("")
