"""The local development stack (``citystream stack``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

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
    mqtt_max_queued_messages: int = Field(100_000, ge=1000)
    mqtt_max_queued_bytes: int = Field(512 * 1024 * 1024, ge=1024 * 1024)
    start_timeout_s: float = Field(60.0, gt=0)
