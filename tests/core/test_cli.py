"""The command line: exit codes and the contract of unfinished subcommands."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import citystream

pytestmark = pytest.mark.unit


def test_bad_config_exits_2_with_field_path(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("sink:\n  batch_rows: many\n")
    res = citystream("stack", "status", config=cfg, check=False)
    assert res.returncode == 2
    assert "sink.batch_rows" in res.stderr


def test_env_var_bad_value_exits_2(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("{}\n")
    res = citystream("stack", "status", config=cfg, check=False, env={"CITYSTREAM_KAFKA__SECURITY_PROTOCOL": "NOPE"})
    assert res.returncode == 2
    assert "kafka.security_protocol" in res.stderr


def test_help_lists_every_subcommand() -> None:
    out = citystream("--help").stdout
    for name in ("stack", "gateway", "bridge", "worker", "sink", "migrate", "query", "demo", "bench"):
        assert name in out
