"""A ``kill -9`` of the worker must not leave its spawn-mode vision processes (or their helpers) running."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.unit

SCRIPT = """
import multiprocessing, os, sys, time
from concurrent.futures import ProcessPoolExecutor
from citystream.processors.frames_agent import exit_with_parent

def init():
    exit_with_parent(os.getppid(), every_s=0.1)

if __name__ == "__main__":
    pool = ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn"), initializer=init)
    pids = {pool.submit(os.getpid).result() for _ in range(8)}
    print("ready", flush=True)
    time.sleep(120)
"""


def children_of(pid: int) -> set[int]:
    """Pids whose parent is ``pid``."""
    out = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            out.add(int(stat.parent.name))
    return out


def running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def test_pool_processes_exit_when_the_worker_is_killed(tmp_path: Path) -> None:
    script = tmp_path / "worker_like.py"
    script.write_text(SCRIPT)
    proc = subprocess.Popen([sys.executable, str(script)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        kids = children_of(proc.pid)
        assert len(kids) >= 2, f"expected the pool's processes under the worker, found {kids}"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        deadline = time.monotonic() + 10
        while any(running(k) for k in kids) and time.monotonic() < deadline:
            time.sleep(0.1)
        left = [k for k in kids if running(k)]
        assert not left, f"processes left running after kill -9 of their parent: {left}"
    finally:
        if proc.poll() is None:
            proc.kill()
