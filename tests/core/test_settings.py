"""Settings: one tree, YAML + env, unknown keys and bad values fail with the field path."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from citystream.settings import ConfigError, Settings, dump_settings, load_settings

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


@pytest.mark.parametrize("example", sorted((Path(__file__).parents[2] / "deploy" / "examples").glob("*.yaml")),
                         ids=lambda p: p.name)
def test_documented_examples_are_valid_settings(example: Path) -> None:
    """Every key of a shipped example is accepted and lands where the example says (no silent default)."""
    def leaves(value: object, prefix: str = "") -> dict[str, str]:
        if isinstance(value, dict):
            return {k: v for key, item in value.items() for k, v in leaves(item, f"{prefix}{key}.").items()}
        if isinstance(value, list):
            return {k: v for i, item in enumerate(value) for k, v in leaves(item, f"{prefix}{i}.").items()}
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        return {prefix.rstrip("."): str(float(value)) if number else str(value)}

    written = leaves(yaml.safe_load(example.read_text()))
    loaded = leaves(dump_settings(load_settings(example)))
    assert written and {k: loaded.get(k) for k in written} == written


@pytest.mark.unit
def test_dumped_settings_reveal_secrets_inside_dicts_and_lists(tmp_path: Path) -> None:
    """`stack up` writes the pseudonym key it generated, never its masked form."""
    from citystream.stack import local

    settings = local.local_settings(Settings.model_validate({"stack": {"home": str(tmp_path / "home")}}))
    creds = local.credentials(settings.stack.home)
    key = creds["pseudonym"]
    dumped = dump_settings(settings, exclude_defaults=True)  # "*" and the gateway tenant's own key
    assert dumped["worker"]["pseudonym_keys"] == {"*": key, "nakhon-rangsit": creds["pseudonym:nakhon-rangsit"]}
    assert "*****" not in yaml.safe_dump(dumped)
    assert len(key) >= 32 and key != local.credentials(tmp_path / "other")["pseudonym"], "a random key per install"


def test_stack_ports_must_differ_and_free_ports_are_never_handed_out_twice() -> None:
    from citystream.stack.procs import free_port

    with pytest.raises(ConfigError, match="must differ"):
        load_settings(None, {"stack.kafka_port": 9093, "stack.kafka_controller_port": 9093})
    ports = [free_port() for _ in range(200)]
    assert len(set(ports)) == len(ports)
