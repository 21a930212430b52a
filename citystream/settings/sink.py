"""Kafka -> ClickHouse sink settings."""

from __future__ import annotations

from pydantic import Field

from citystream.settings.base import Section


class SinkSettings(Section):
    """Kafka -> ClickHouse sink: consumer group, batch limits, read-only query path."""

    group_id: str = "citystream-sink"
    batch_rows: int = Field(50_000, ge=1)
    batch_bytes: int = Field(32 * 1024 * 1024, ge=1024)
    batch_age_s: float = Field(1.0, gt=0)
    query_host: str = "127.0.0.1"
    query_port: int = Field(8124, ge=0, le=65535)
    retry_max_s: float = Field(30.0, gt=0)
