"""Edge gateway settings."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr

from citystream.settings.base import Section
from citystream.settings.stack import DEFAULT_HOME


class SensorSpec(Section):
    """One sensor on a gateway."""

    device_id: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    metric: str
    district: str = ""


class GatewaySettings(Section):
    """One edge gateway: identity, MQTT login and its devices."""

    tenant: str = Field("nakhon-rangsit", pattern=r"^[a-z0-9-]+$")
    gateway_id: str = Field("gw-demo-1", pattern=r"^[A-Za-z0-9_.-]+$")
    username: str = ""
    password: SecretStr = SecretStr("")
    state_dir: Path = DEFAULT_HOME / "gateway"
    interval_s: float = Field(1.0, gt=0)
    sensors: list[SensorSpec] = Field(default_factory=list)
