"""Every command that talks to Kafka, ClickHouse or MQTT ends with one line on stderr and exit 1 when the server
is down, never a traceback (the real command line against a closed loopback port)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from citystream.cli import COMMAND_KEY, SETTINGS_KEY, server_failure
from citystream.settings import Settings
from tests.conftest import REPO, free_port

pytestmark = pytest.mark.integration

PHOTO = REPO / "processors" / "models" / "plate_chars.npz"  # any existing file: the watchlist is read first
# command -> (argv, the server it needs)
COMMANDS: dict[str, tuple[list[str], str]] = {
    "watchlist list": (["watchlist", "list"], "kafka"),
    "watchlist add-plate": (["watchlist", "add-plate", "1กข 1234", "--tenant", "t", "--reason", "test",
                             "--legal-basis", "test", "--expires", "1d"], "kafka"),
    "watchlist remove": (["watchlist", "remove", "some-entry", "--reason", "test"], "kafka"),
    "faces match": (["faces", "match", "--tenant", "t", str(PHOTO)], "kafka"),
    "topics apply": (["topics", "apply"], "kafka"),
    "query": (["query", "--json", "SELECT 1"], "clickhouse"),
    "migrate": (["migrate"], "clickhouse"),
    "status": (["status", "--interval", "0.5", "--timeout", "2"], "kafka"),
    "privacy audit": (["privacy", "audit"], "clickhouse"),
    "privacy search": (["privacy", "search", "--plate", "1กข 1234", "--province", "กรุงเทพมหานคร"], "clickhouse"),
    "privacy erase": (["privacy", "erase", "--plate", "1กข 1234", "--province", "กรุงเทพมหานคร",
                       "--reason", "test"], "clickhouse"),
}
# these reach the CLI's central handler (the others report the failure themselves)
CENTRAL = {"watchlist list", "faces match"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[int, str, str, int]]:
    """Every command at once (each waits out its own connection timeout) against closed ports."""
    home = tmp_path_factory.mktemp("down")
    port = free_port()
    env = {**os.environ, "CITYSTREAM_KAFKA__BOOTSTRAP": f"127.0.0.1:{port}", "CITYSTREAM_MQTT__PORT": str(port),
           "CITYSTREAM_CLICKHOUSE__DSN": f"http://127.0.0.1:{port}", "CITYSTREAM_STACK__HOME": str(home),
           "CITYSTREAM_CONFIG": str(home / "none.yaml")}
    (home / "none.yaml").write_text("{}\n")
    procs = {name: subprocess.Popen([sys.executable, "-m", "citystream", *argv], stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True, env=env, cwd=home)
             for name, (argv, _server) in COMMANDS.items()}
    results = {}
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=300)
        results[name] = (proc.returncode, out, err, port)
    return results


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_a_command_with_its_server_down_ends_in_one_line_and_exit_1(
        name: str, runs: dict[str, tuple[int, str, str, int]]) -> None:
    code, out, err, port = runs[name]
    assert code == 1, (out, err)
    assert "Traceback" not in err and "Traceback" not in out, err
    server = COMMANDS[name][1]
    if name == "status":  # a screen that says which stages are down
        assert "NOT HEALTHY" in out and "kafka unreachable at" in out, out
        return
    last = err.strip().splitlines()[-1]
    assert last.startswith("citystream: "), err
    assert server in last.lower() or f"127.0.0.1:{port}" in last, last  # names the server or where it was sought
    if name in CENTRAL:
        assert re.fullmatch(rf"citystream: {name}: kafka unreachable at 127\.0\.0\.1:{port}: .+", last), last


@pytest.mark.unit
def test_an_mqtt_connection_refused_is_named_for_mqtt_with_its_address() -> None:
    port = free_port()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    with pytest.raises(ConnectionRefusedError) as caught:
        client.connect("127.0.0.1", port)
    meta = {SETTINGS_KEY: Settings(mqtt={"port": port}), COMMAND_KEY: "gateway simulate"}
    assert server_failure(caught.value, meta) == (
        f"gateway simulate: mqtt unreachable at 127.0.0.1:{port}: Connection refused")


@pytest.mark.unit
def test_other_errors_are_not_hidden() -> None:
    """A bug keeps its traceback: only server failures are turned into one line."""
    assert server_failure(ValueError("bug"), {}) is None
    assert server_failure(ConnectionRefusedError(111, "refused"), {}) is None  # raised outside a server library
    try:
        try:
            raise ConnectionRefusedError(111, "Connection refused")
        except ConnectionRefusedError as exc:
            raise RuntimeError("wrapped") from exc
    except RuntimeError as exc:
        assert server_failure(exc, {}) is None


def test_the_real_cli_keeps_usage_errors_as_exit_2(tmp_path: Path) -> None:
    res = subprocess.run([sys.executable, "-m", "citystream", "query", "--nope"], capture_output=True, text=True,
                         cwd=REPO, timeout=60)
    assert res.returncode == 2 and "Traceback" not in res.stderr
