"""``citystream plates read`` shows a progress bar on a terminal's stderr, never with --json, never in stdout."""

from __future__ import annotations

import os
import pty
import random
import subprocess
import sys
from pathlib import Path

import cv2
import pytest
import yaml

from citystream.processors.plates.synth import road_scene_with_plate
from tests.conftest import REPO

pytestmark = pytest.mark.unit


def run_with_terminal_stderr(*args: str) -> tuple[int, str, str]:
    """Run the real command with stderr on a pseudo-terminal and stdout on a pipe: (code, stdout, terminal)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "citystream", *args], stdout=subprocess.PIPE, stderr=slave,
                            cwd=REPO, env={**os.environ, "COLUMNS": "100", "TERM": "xterm"})
    os.close(slave)
    stdout, _ = proc.communicate(timeout=120)
    seen = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the terminal's other side is closed and drained
            break
        if not chunk:
            break
        seen += chunk
    os.close(master)
    return proc.returncode, stdout.decode(), seen.decode(errors="replace")


def test_a_bar_on_a_terminal_stderr_and_none_with_json(tmp_path: Path) -> None:
    images = []
    for seed in (31, 32):
        frame, _label = road_scene_with_plate(random.Random(seed))
        images.append(str(tmp_path / f"{seed}.jpg"))
        cv2.imwrite(images[-1], frame)
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"stack": {"home": str(tmp_path)}}))
    piped = subprocess.run([sys.executable, "-m", "citystream", "--config", str(config), "plates", "read", *images],
                           capture_output=True, text=True, cwd=REPO, timeout=120)
    assert piped.returncode == 0 and "reading plates" not in piped.stderr  # not a terminal: no bar

    code, stdout, terminal = run_with_terminal_stderr("--config", str(config), "plates", "read", *images)
    assert code == 0 and stdout == piped.stdout  # the output itself is unchanged
    assert "reading plates" in terminal and "2/2" in terminal

    code, stdout, terminal = run_with_terminal_stderr("--config", str(config), "plates", "read", "--json", *images)
    assert code == 0 and len(stdout.splitlines()) == len(piped.stdout.splitlines())
    assert "reading plates" not in terminal
