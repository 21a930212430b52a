"""Shared pieces of the benchmark: load scales, result entries, the report, stage processes, the stack."""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from citystream.settings import Settings, dump_settings, load_settings
from citystream.stack.procs import free_port, terminate

Entry = dict[str, Any]


@dataclass(frozen=True)
class Scale:
    """How much load each stage gets (bounded in count); ``tiny`` exists for the test suite."""

    name: str
    mqtt_small: int
    mqtt_frames: int
    kafka_rows: int
    sink_batch: int
    vision_frames: int
    accuracy_n: int
    e2e_seconds: float
    worker_frames: int
    scaling: bool


SCALES = {
    "tiny": Scale("tiny", 2_000, 100, 10_000, 2_000, 2, 3, 2.0, 8, False),
    "quick": Scale("quick", 20_000, 1_000, 100_000, 20_000, 6, 12, 5.0, 24, True),
    "full": Scale("full", 100_000, 5_000, 400_000, 50_000, 24, 300, 15.0, 80, True),
}


def entry(value: float, unit: str, ceiling: float | None, **extra: Any) -> Entry:
    """One stage figure: value, unit, the ceiling it is compared with, and value / ceiling."""
    ratio = round(value / ceiling, 4) if ceiling else None
    return {"value": round(value, 4), "unit": unit, "ceiling": None if ceiling is None else round(ceiling, 4),
            "ratio": ratio, **extra}


def machine_info() -> dict[str, Any]:
    """What the figures were measured on (the load average says how shared the machine was)."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        mem_kb = int(next(x for x in Path("/proc/meminfo").read_text().splitlines()
                          if x.startswith("MemTotal")).split()[1])
    except (OSError, StopIteration, ValueError):
        mem_kb = 0
    return {"hostname": socket.gethostname(), "cpu": model, "cores": os.cpu_count(),
            "usable_cores": len(os.sched_getaffinity(0)), "memory_gib": round(mem_kb / 1024 / 1024, 1),
            "python": platform.python_version(), "platform": platform.platform(),
            "load_average": [round(x, 2) for x in os.getloadavg()]}


class Report:
    """The JSON document: stages and ceilings under stable keys, errors instead of missing figures."""

    def __init__(self, mode: str) -> None:
        """An empty report for one run of ``mode``."""
        self.doc: dict[str, Any] = {"schema": 1, "mode": mode, "started_at": datetime.now(UTC).isoformat(),
                                    "machine": machine_info(), "ceilings": {}, "stages": {}}

    def add(self, results: dict[str, Entry]) -> None:
        """Merge stage results; keys of raw ceilings start with ``ceiling:``."""
        for key, value in results.items():
            if key.startswith("ceiling:"):
                self.doc["ceilings"][key.split(":", 1)[1]] = value
            else:
                self.doc["stages"][key] = value

    def run(self, keys: list[str], fn: Callable[[], dict[str, Entry]]) -> str | None:
        """Run one measurement; when it fails, each of its keys records the error. Returns the error."""
        started = time.monotonic()
        try:
            results = fn()
        except Exception as exc:  # a broken stage is reported, the run goes on
            reason = f"{type(exc).__name__}: {exc}"[:500]
            self.add({k: {"error": reason} for k in keys})
            return reason
        missing = [k for k in keys if k not in results]
        self.add(results)
        self.add({k: {"error": "not measured"} for k in missing})
        self.doc.setdefault("seconds", {})[",".join(k.split(":")[-1] for k in keys)] = round(
            time.monotonic() - started, 1)
        return None

    def finish(self) -> dict[str, Any]:
        """The document with the end time and the load average at the end."""
        self.doc["finished_at"] = datetime.now(UTC).isoformat()
        self.doc["machine"]["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
        return self.doc


def tag() -> str:
    """A short unique name for one measurement's topics, groups and databases."""
    return "b" + uuid.uuid4().hex[:8]


def isolated(config: Path, name: str, **overrides: Any) -> Settings:
    """Settings of the stack in ``config`` with this measurement's own topics, root and groups."""
    base = {"kafka.topic_prefix": f"{name}.", "mqtt.topic_root": name, "bridge.share_group": f"{name}-bridge",
            "sink.group_id": f"{name}-sink", "worker.app_id": f"{name}-worker", "log.level": "WARNING"}
    return load_settings(config, {**base, **overrides})


def write_settings(settings: Settings, path: Path) -> Path:
    """Settings as a YAML file (mode 0600: it holds the stack's passwords) for a stage process."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        yaml.safe_dump(dump_settings(settings), out, allow_unicode=True)
    return path


class Procs:
    """Stage processes (``python -m citystream ... STAGE``) started by this run; stopped by pid only."""

    def __init__(self, workdir: Path) -> None:
        """Logs of the processes go to ``workdir``."""
        self.workdir = workdir
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, name: str, settings: Settings, *args: str) -> subprocess.Popen[bytes]:
        """Start one stage with its own settings file; output to ``<name>.log``."""
        cfg = write_settings(settings, self.workdir / f"{name}.yaml")
        with open(self.workdir / f"{name}.log", "ab") as log:
            proc = subprocess.Popen([sys.executable, "-m", "citystream", "--config", str(cfg), *args],
                                    stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True)
        self.procs.append((name, proc))
        return proc

    def check(self, proc: subprocess.Popen[bytes]) -> None:
        """Raise with the log tail when a stage process has exited."""
        if proc.poll() is not None:
            name = next(n for n, p in self.procs if p is proc)
            raise RuntimeError(f"{name} exited with {proc.returncode}: {self.tail(name)}")

    def tail(self, name: str, lines: int = 8) -> str:
        """Last lines of a stage's log."""
        try:
            return " | ".join((self.workdir / f"{name}.log").read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, proc: subprocess.Popen[bytes], timeout_s: float = 20.0) -> int | None:
        """SIGTERM, wait, SIGKILL; returns the exit code."""
        return terminate(proc, timeout_s)

    def stop_all(self) -> None:
        """Stop every process this run started and still runs."""
        for _name, proc in reversed(self.procs):
            self.stop(proc)
        self.procs.clear()


def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str, interval_s: float = 0.1,
               check: Callable[[], None] | None = None) -> float:
    """Poll until ``predicate()``; returns the wall-clock time it became true, raises TimeoutError."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return time.time()
        if check is not None:
            check()
        time.sleep(interval_s)
    raise TimeoutError(f"{what}: not done within {timeout_s:.0f} s")


def start_stack(home: Path, jars: Path) -> Path:
    """Start Mosquitto + Kafka in ``home`` on free loopback ports; returns the generated config file."""
    from citystream.stack import local

    base = home / "base.yaml"
    base.write_text(yaml.safe_dump({"stack": {
        "home": str(home), "mqtt_port": free_port(), "kafka_port": free_port(),
        "kafka_controller_port": free_port(), "kafka_jars": str(jars), "kafka_heap": "512m"},
        "log": {"level": "WARNING"}}))
    local.up(load_settings(base))
    return local.config_file(load_settings(base))


def stop_stack(home: Path) -> None:
    """Stop the servers started by :func:`start_stack` (by their pid files)."""
    from citystream.stack import local

    local.down(load_settings(home / "base.yaml"))
