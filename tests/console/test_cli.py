"""``citystream console`` as a command: password hashing, config errors, serving and stopping on SIGTERM."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from citystream.console.auth import hash_password, verify_password
from citystream.stack.procs import free_port
from tests.conftest import REPO, citystream

pytestmark = pytest.mark.unit


def test_hash_password_reads_stdin_and_prints_a_verifiable_hash() -> None:
    res = subprocess.run([sys.executable, "-m", "citystream", "console", "--hash-password"], input="pässwort\n",
                         capture_output=True, text=True, timeout=60, cwd=REPO)
    assert res.returncode == 0, res.stderr
    assert verify_password("pässwort", res.stdout.strip()) and not verify_password("passwort", res.stdout.strip())


def test_no_users_is_a_configuration_error(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("console: {port: 0}\n")
    res = citystream("console", config=config, check=False)
    assert res.returncode == 2 and "no console users" in res.stderr


def test_a_taken_port_is_a_configuration_error(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        config = tmp_path / "c.yaml"
        config.write_text(yaml.safe_dump({"console": {"port": taken.getsockname()[1], "users": {
            "op": {"role": "operator", "password_hash": hash_password("x")}}}}))
        res = citystream("console", config=config, check=False)
    assert res.returncode == 2 and "console.port" in res.stderr and "Traceback" not in res.stderr


def test_serves_and_exits_0_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({
        "kafka": {"bootstrap": f"127.0.0.1:{free_port()}"},  # nothing there: the feed keeps retrying
        "clickhouse": {"dsn": f"chdb://{tmp_path / 'store'}"},
        "console": {"port": port, "users": {"op": {"role": "operator", "password_hash": hash_password("x")}}}}))
    proc = subprocess.Popen([sys.executable, "-m", "citystream", "--config", str(config), "console"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO)
    try:
        health = None
        deadline = time.monotonic() + 60
        while health is None and time.monotonic() < deadline and proc.poll() is None:
            try:
                health = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2).read())
            except OSError:
                time.sleep(0.3)
        assert health == {"ok": True, "feed_connected": False, "feed_items": 0}
        login = urllib.request.urlopen(f"http://127.0.0.1:{port}/login", timeout=5).read().decode()
        assert "เข้าสู่ระบบ" in login and "Log in" in login
    finally:
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err.decode()
    assert not (tmp_path / "store").exists()  # the console never opened the embedded store itself
