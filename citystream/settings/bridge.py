"""MQTT -> Kafka bridge settings."""

from __future__ import annotations

from pydantic import Field

from citystream.settings.base import Section


class BridgeSettings(Section):
    """MQTT -> Kafka bridge: shared subscription, in-flight bounds, input limits."""

    share_group: str = Field("citystream-bridge", pattern=r"^[A-Za-z0-9_-]+$")
    client_id: str = ""
    max_inflight: int = Field(1000, ge=1, le=65535)
    max_inflight_bytes: int = Field(64 * 1024 * 1024, ge=1024)
    max_reading_bytes: int = Field(16 * 1024, ge=256)
    max_frame_bytes: int = Field(4 * 1024 * 1024, ge=1024)
    max_clock_skew_s: float = Field(7 * 86400.0, gt=0)
    linger_ms: int = Field(5, ge=0)
