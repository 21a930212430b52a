"""One settings tree for every citystream process.

Sources, lowest to highest priority: defaults below, a YAML file (``--config`` or
``CITYSTREAM_CONFIG``; else ``.citystream/citystream.yaml`` when ``citystream stack up`` wrote
one), then ``CITYSTREAM_`` environment variables with ``__`` for nesting
(``CITYSTREAM_KAFKA__BOOTSTRAP=...``). Unknown keys are errors everywhere (``extra="forbid"``).
Read once at the entry point and passed down; no other module reads the environment.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from citystream.settings.base import Section, TlsSettings
from citystream.settings.bridge import BridgeSettings
from citystream.settings.connections import ClickHouseSettings, KafkaSettings, MqttSettings
from citystream.settings.console import ConsoleSettings
from citystream.settings.gateway import GatewaySettings, SensorSpec
from citystream.settings.observability import LogSettings, MetricsSettings
from citystream.settings.retention import RetentionSettings
from citystream.settings.sink import SinkSettings
from citystream.settings.stack import DEFAULT_HOME, StackSettings
from citystream.settings.worker import WorkerSettings

DEFAULT_CONFIG = DEFAULT_HOME / "citystream.yaml"

__all__ = ["BridgeSettings", "ClickHouseSettings", "ConfigError", "GatewaySettings", "KafkaSettings",
           "LogSettings", "MetricsSettings", "MqttSettings", "Section", "SensorSpec", "Settings",
           "SinkSettings", "StackSettings", "TlsSettings", "WorkerSettings", "load_settings"]


class Settings(BaseSettings):
    """The whole citystream configuration."""

    model_config = SettingsConfigDict(env_prefix="CITYSTREAM_", env_nested_delimiter="__", extra="forbid")

    mqtt: MqttSettings = Field(default_factory=MqttSettings)
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    clickhouse: ClickHouseSettings = Field(default_factory=ClickHouseSettings)
    stack: StackSettings = Field(default_factory=StackSettings)
    bridge: BridgeSettings = Field(default_factory=BridgeSettings)
    sink: SinkSettings = Field(default_factory=SinkSettings)
    retention: RetentionSettings = Field(default_factory=RetentionSettings)
    gateway: GatewaySettings = Field(default_factory=GatewaySettings)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    log: LogSettings = Field(default_factory=LogSettings)
    console: ConsoleSettings = Field(default_factory=ConsoleSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Environment variables override values from the YAML file (passed as init values)."""
        return (env_settings, init_settings)


class ConfigError(Exception):
    """Configuration is invalid; the message names each field path and the reason."""


def _format_errors(exc: ValidationError, source: str) -> str:
    lines = [f"invalid configuration ({source}):"]
    for err in exc.errors():
        path = ".".join(str(p) for p in err["loc"]) or "<root>"
        lines.append(f"  {path}: {err['msg']}")
    return "\n".join(lines)


def config_path(explicit: str | Path | None = None) -> Path | None:
    """The YAML file to read: explicit, ``CITYSTREAM_CONFIG``, or the local stack's file."""
    if explicit:
        return Path(explicit)
    env = os.environ.get("CITYSTREAM_CONFIG")
    if env:
        return Path(env)
    return DEFAULT_CONFIG if DEFAULT_CONFIG.is_file() else None


def load_settings(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> Settings:
    """Read and validate the settings; raise ConfigError with field paths on any problem."""
    file = config_path(path)
    data: dict[str, Any] = {}
    source = "defaults and environment"
    if file is not None:
        source = str(file)
        try:
            loaded = yaml.safe_load(file.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ConfigError(f"config file not found: {file}") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {file} is not valid YAML: {exc}") from exc
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {file}: top level must be a mapping, got {type(loaded).__name__}")
        data = loaded
    for dotted, value in (overrides or {}).items():
        node = data
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    try:
        return Settings(**data)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, source)) from exc


def dump_settings(settings: Settings, exclude_defaults: bool = False) -> dict[str, Any]:
    """The settings as plain YAML-able data, secrets included (for files written with mode 0600)."""
    raw = settings.model_dump(mode="json", exclude_defaults=exclude_defaults)

    def plain(value: Any, dumped: Any) -> Any:
        """``dumped`` with every SecretStr inside ``value`` (models, dicts, lists) revealed."""
        if isinstance(value, SecretStr):
            return value.get_secret_value()
        if isinstance(value, BaseModel) and isinstance(dumped, dict):
            for name in type(value).model_fields:
                if name in dumped:
                    dumped[name] = plain(getattr(value, name), dumped[name])
        elif isinstance(value, dict) and isinstance(dumped, dict):
            for key in dumped:
                if key in value:
                    dumped[key] = plain(value[key], dumped[key])
        elif isinstance(value, (list, tuple)) and isinstance(dumped, list) and len(value) == len(dumped):
            dumped[:] = [plain(v, d) for v, d in zip(value, dumped, strict=True)]
        return dumped

    result: dict[str, Any] = plain(settings, raw)
    return result
