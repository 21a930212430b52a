"""MQTT -> Kafka bridge settings."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from citystream.settings.base import Section


class BridgeSettings(Section):
    """MQTT -> Kafka bridge: shared subscription, in-flight bounds, input limits."""

    share_group: str = Field("citystream-bridge", pattern=r"^[A-Za-z0-9_-]+$")
    client_id: str = Field("", pattern=r"^[A-Za-z0-9_.-]*$",
                           description="stable per replica so its MQTT session survives restarts; '' = host-based")
    session_expiry_s: int = Field(86_400, ge=0,
                                  description="how long Mosquitto keeps QoS 1 messages for a stopped bridge")
    max_inflight: int = Field(1000, ge=1, le=65535, description="unacked MQTT messages; also MQTT v5 ReceiveMaximum")
    max_inflight_bytes: int = Field(64 * 1024 * 1024, ge=1024,
                                    description="payload bytes read but not yet confirmed by Kafka (plus one message)")
    max_reading_bytes: int = Field(16 * 1024, ge=256)
    max_frame_bytes: int = Field(4 * 1024 * 1024, ge=1024)
    max_clock_skew_s: float = Field(7 * 86400.0, gt=0)
    linger_ms: int = Field(5, ge=0)
    compression: Literal["none", "gzip", "snappy", "lz4", "zstd"] = Field(
        "lz4", description="for JSON records (readings, status, DLQ); frames are never compressed")
    delivery_timeout_ms: int = Field(30_000, ge=1000,
                                     description="librdkafka message.timeout.ms; failed records are re-produced")
    track_sequences: bool = Field(True,
                                  description="gap/duplicate tracking; exact only if one replica sees a whole gateway")
    seq_max_keys: int = Field(100_000, ge=1, description="(gateway, stream) pairs tracked in memory (LRU)")
    dlq_max_original_bytes: int = Field(1024 * 1024, ge=1024,
                                        description="original bytes kept in a DLQ record (oversized input)")
    shutdown_timeout_s: float = Field(30.0, gt=0, description="flush budget on SIGTERM")
    reconnect_max_s: float = Field(2.0, gt=0, description="longest back-off between MQTT reconnect attempts "
                                                           "(gateways hold their spools until a bridge is back)")
    ready_interval_s: float = Field(1.0, gt=0, le=60,
                                    description="how often a subscribed bridge publishes {root}/_bridge/ready")
    confirm_interval_s: float = Field(0.5, gt=0, le=60, description="how often Kafka-confirmed seqs are sent back "
                                      "to their gateways on {root}/_bridge/confirm/{tenant}/{gateway}")
