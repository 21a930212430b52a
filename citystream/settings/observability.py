"""Metrics endpoint and logging settings."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from citystream.settings.base import Section


class MetricsSettings(Section):
    """Prometheus ``/metrics`` endpoint of this process (port 0 disables it)."""

    host: str = "127.0.0.1"
    port: int = Field(0, ge=0, le=65535)


class LogSettings(Section):
    """Structured logs on stderr."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    json_format: bool = False
