"""Settings: one tree, YAML + env, unknown keys and bad values fail with the field path."""

from __future__ import annotations

from pathlib import Path

import pytest

from citystream.settings import ConfigError, load_settings

pytestmark = pytest.mark.unit


def test_defaults_are_valid(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CITYSTREAM_CONFIG", raising=False)
    s = load_settings()
    assert s.kafka.bootstrap == "127.0.0.1:9092"
    assert s.clickhouse.dsn.startswith("chdb://")


def test_yaml_then_env_override(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("kafka:\n  bootstrap: kafka-a:9092\nsink:\n  batch_rows: 1000\n")
    monkeypatch.setenv("CITYSTREAM_SINK__BATCH_ROWS", "2000")
    s = load_settings(cfg)
    assert s.kafka.bootstrap == "kafka-a:9092"
    assert s.sink.batch_rows == 2000


def test_unknown_key_names_the_path(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("kafka:\n  bootstrap_servers: x:1\n")
    with pytest.raises(ConfigError) as info:
        load_settings(cfg)
    assert "kafka.bootstrap_servers: Extra inputs are not permitted" in str(info.value)


def test_bad_value_names_the_path_and_reason(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("mqtt:\n  port: 70000\n")
    with pytest.raises(ConfigError) as info:
        load_settings(cfg)
    assert "mqtt.port" in str(info.value) and "65535" in str(info.value)


def test_not_a_mapping_and_missing_file(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_settings(cfg)
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "absent.yaml")


def test_secrets_are_not_in_repr(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("mqtt:\n  password: hunter2-secret\n")
    s = load_settings(cfg)
    assert "hunter2-secret" not in repr(s) and "hunter2-secret" not in str(s.model_dump())
