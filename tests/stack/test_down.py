"""``citystream stack down`` is the one command that stops what ``make demo`` leaves running: the live pipeline
(traffic first, the sink last), the demo console, then the servers. Stand-in processes carry the command lines
the real ones have (a pid file alone must not be enough to be stopped), so no server is needed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from citystream.stack.pipeline import CONFIG_FILE, STAGES, TRAFFIC_COMMAND
from tests.conftest import citystream

pytestmark = pytest.mark.unit

SLEEP = "import time; time.sleep(120)"


def _stand_in(*argv: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", SLEEP, *argv], start_new_session=True)


def test_stack_down_stops_the_live_pipeline_and_the_demo_console(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / "pipeline").mkdir(parents=True)
    config = tmp_path / "citystream.yaml"
    config.write_text(yaml.safe_dump({"stack": {"home": str(home)}}))
    (home / "pipeline" / CONFIG_FILE).write_text(f"{config}\n")
    procs = {name: _stand_in("--config", str(config), name) for name in STAGES}
    procs["traffic"] = _stand_in("--config", str(config), *TRAFFIC_COMMAND, "--round", "180")
    procs["console"] = _stand_in("console", "--demo-login")
    bystander = _stand_in("--config", str(config), "somethingelse")  # its pid in a pid file: not ours to stop
    try:
        for name, proc in procs.items():
            pid_file = home / ("console.pid" if name == "console" else f"pipeline/{name}.pid")
            pid_file.write_text(str(proc.pid))
        res = citystream("stack", "down", config=config, timeout=120)
        assert res.stdout.split() == ["traffic=stopped", "bridge=stopped", "worker=stopped", "sink=stopped",
                                      "console=stopped", "kafka=not", "running", "mqtt=not", "running"]
        assert {name: proc.wait(10) for name, proc in procs.items()} == dict.fromkeys(procs, -15)  # SIGTERM
        assert not list((home / "pipeline").glob("*.pid")) and not (home / "console.pid").exists()
        (home / "pipeline" / "sink.pid").write_text(str(bystander.pid))
        assert citystream("stack", "pipeline", "stop", config=config).stdout.split()[-2:] == ["sink=not", "running"]
        assert bystander.poll() is None
    finally:
        for proc in (*procs.values(), bystander):
            proc.kill()
            proc.wait()
