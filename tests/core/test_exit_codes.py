"""Exit codes as the README states them, for every command and failure class: 0 ok, 1 failure, 2 usage or
configuration — each with one line on stderr and no traceback.

Server outages (exit 1) are covered command by command in ``test_cli_failures.py``; this file covers
usage errors, invalid settings, a metrics port already taken, and a failure of the input itself.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from citystream.cli import SUBCOMMANDS
from tests.conftest import citystream

pytestmark = pytest.mark.unit


def no_traceback(stderr: str) -> bool:
    return "Traceback" not in stderr


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A loopback port some other process is listening on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


@pytest.mark.parametrize("argv", [
    ("--no-such-option",), ("bridge", "--max-inflight", "many"), ("gateway", "--bogus"),
    ("plates", "read"), ("no-such-command",),
])
def test_usage_errors_exit_2(argv: tuple[str, ...]) -> None:
    res = citystream(*argv, check=False)
    assert res.returncode == 2, res.stderr
    assert no_traceback(res.stderr)


@pytest.mark.parametrize("command", sorted(name for name in SUBCOMMANDS if name not in {"stack", "bench"}))
def test_every_command_has_help_and_exits_0(command: str) -> None:
    res = citystream(command, "--help", check=False)
    assert res.returncode == 0, res.stderr
    assert "Usage:" in res.stdout


@pytest.mark.parametrize("argv", [("bridge",), ("sink",), ("gateway",), ("query", "SELECT 1")])
def test_invalid_settings_exit_2_naming_the_field(tmp_path: Path, argv: tuple[str, ...]) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(yaml.safe_dump({"bridge": {"max_inflight": -3}, "sink": {"no_such_key": 1}}))
    res = citystream("--config", str(cfg), *argv, check=False)
    assert res.returncode == 2, res.stderr
    assert "bridge.max_inflight" in res.stderr and "sink.no_such_key" in res.stderr
    assert no_traceback(res.stderr)


@pytest.mark.parametrize("argv", [("bridge",), ("sink",), ("gateway",)])
def test_a_metrics_port_already_taken_exits_2(tmp_path: Path, taken_port: int, argv: tuple[str, ...]) -> None:
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump({
        "metrics": {"port": taken_port},
        "clickhouse": {"dsn": f"chdb://{tmp_path / 'store'}"},
        "gateway": {"state_dir": str(tmp_path / "gateway")},
    }))
    res = citystream("--config", str(cfg), *argv, check=False, timeout=60)
    assert res.returncode == 2, res.stderr
    assert f"metrics.port {taken_port}: cannot serve /metrics" in res.stderr
    assert no_traceback(res.stderr)


def test_unreadable_input_is_a_failure_exit_1(tmp_path: Path) -> None:
    res = citystream("plates", "read", str(tmp_path / "missing.jpg"), check=False, timeout=60)
    assert res.returncode == 1, res.stderr
    assert "missing.jpg" in res.stderr and no_traceback(res.stderr)
