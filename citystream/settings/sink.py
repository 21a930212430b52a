"""Kafka -> ClickHouse sink settings."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr

from citystream.settings.base import Section


class SinkSettings(Section):
    """Kafka -> ClickHouse sink: consumer group, batch limits, read-only query path, frames archive."""

    group_id: str = "citystream-sink"
    batch_rows: int = Field(50_000, ge=1)
    batch_bytes: int = Field(32 * 1024 * 1024, ge=1024)
    batch_age_s: float = Field(1.0, gt=0)
    session_timeout_ms: int = Field(45_000, ge=6_000, le=300_000,
                                    description="consumer group session timeout: how soon a dead sink's "
                                                "partitions move to another (or a restarted) sink")
    instance_id: str = Field("", pattern=r"^[A-Za-z0-9_.-]*$",
                             description="Kafka static group membership (group.instance.id), stable per replica: "
                                         "a restarted sink takes its partitions back at once instead of waiting "
                                         "for its dead predecessor's session to time out; '' = dynamic membership")
    query_host: str = "127.0.0.1"
    query_port: int = Field(8124, ge=0, le=65535, description="0 = any free port (advertised to readers)")
    privacy_token: SecretStr = Field(SecretStr(""), description="bearer token of the sink's POST /privacy route "
                                     "(erasure, audit entries), never the /query token; give it only to the privacy "
                                     "officer's settings. '' = the sink makes a random one per start, readable only "
                                     "by its user in <chdb path>/citystream-privacy-token")
    retry_max_s: float = Field(30.0, gt=0, description="cap of the exponential backoff between insert retries")
    archive_frames: bool = Field(True, description="keep frames that carry detections in frames_dir + frame_index")
    frames_dir: Path = Field(Path(".citystream/frames"), description="claim-check store for frames with detections")

    def static_membership(self, suffix: str = "") -> dict[str, str]:
        """Consumer settings for static group membership (empty when ``instance_id`` is not set)."""
        return {"group.instance.id": f"{self.instance_id}{suffix}"} if self.instance_id else {}
