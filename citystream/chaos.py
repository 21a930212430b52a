"""``citystream chaos``: the whole pipeline under a seeded fault schedule, then every seq reconciled.

It starts an isolated stack (Mosquitto + Kafka on free loopback ports, embedded ClickHouse, all
under a temporary home) and the pipeline as separate processes — the gateway simulator, bridge,
worker and sink — then injects faults at seeded times: ``kill -9`` of each process (restarted a
few seconds later, like a supervisor would), a clean restart and a ``kill -9`` + restart of
Mosquitto, and a clean restart of Kafka. A stage that exits by itself is restarted and counted
(``unplanned_exits``). After the traffic ends the simulator drains its spools and the run waits for
the pipeline to settle, then reconciles (:mod:`citystream.reconcile`):

- readings: every seq the gateways' own seq stores handed out must be in ``v_sensor_readings``;
- frames: every frame seq must be in Kafka's ``raw.frames`` and the worker group must have
  committed to the end of it (every frame analysed);
- ``view_duplicates``: rows minus distinct ``event_id`` in the analyst views of readings, plate
  reads, alerts and device status (must be 0).

The last stdout line is one JSON object: ``{"seed", "duration_s", "published", "stored", "lost",
"view_duplicates", "faults": [{"at_s", "kind", "down_s"}], "unplanned_exits", "streams", "ok"}``
(``published``/``stored``/``lost`` count readings + frames; ``logs`` names a copy of the processes'
logs when a stage exited by itself or the run was not ok, or with ``--keep``). Exit 0 only when ``ok``: nothing lost,
nothing doubled, the worker caught up and the spools drained.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import click
import yaml

from citystream.cli import config_option, fail, print_json, settings_of
from citystream.clickhouse import StoreError, query_rows
from citystream.demo import metric_value, sink_ready
from citystream.reconcile import (
    frames_in_kafka,
    published_seqs,
    reconcile,
    spool_left,
    stored_reading_seqs,
    view_duplicates,
    worker_caught_up,
)
from citystream.schemas import migrate as schema
from citystream.settings import Settings, dump_settings, load_settings
from citystream.stack import kafka, local, mosquitto
from citystream.stack.procs import free_port, terminate

FAULT_KINDS = ("kill9_gateways", "kill9_bridge", "kill9_worker", "kill9_sink", "restart_mqtt", "kill9_mqtt",
               "restart_kafka")
SETTLE_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class Traffic:
    """What the simulator publishes."""

    gateways: int = 4
    sensors: int = 10
    rate_hz: float = 5.0
    cameras: int = 1
    camera_fps: float = 1.0


@dataclass
class Fault:
    """One injected fault: when (seconds into the run), what, and how long the target stayed down."""

    at_s: float
    kind: str
    down_s: float


@dataclass
class Proc:
    """One pipeline process under the chaos supervisor."""

    name: str
    argv: list[str]
    log: Path
    metrics_url: str
    proc: subprocess.Popen[bytes] | None = None
    planned_down: bool = False
    unplanned_exits: int = 0


def schedule(seed: int, duration_s: float, repeats: int) -> list[Fault]:
    """Seeded fault times and kinds: every kind ``repeats`` times, spread over 10-80 % of the run."""
    rng = random.Random(seed)
    kinds = [k for k in FAULT_KINDS for _ in range(repeats)]
    rng.shuffle(kinds)
    slot = duration_s * 0.7 / len(kinds)
    return [Fault(round(duration_s * 0.1 + i * slot + rng.uniform(0, slot * 0.5), 1), kind,
                  round(rng.uniform(1.0, 5.0), 1)) for i, kind in enumerate(kinds)]


@dataclass
class Run:
    """An isolated stack and the pipeline processes of one chaos run."""

    settings: Settings
    config: Path
    home: Path
    traffic: Traffic
    prefix: str
    echo: Callable[[str], None]
    procs: dict[str, Proc] = field(default_factory=dict)
    started: float = 0.0

    # --- processes ------------------------------------------------------------------------
    def add(self, name: str, *args: str) -> None:
        """Register and start ``citystream <args>`` as the stage ``name``."""
        port = free_port()
        argv = [sys.executable, "-m", "citystream", "--config", str(self.config), *args]
        self.procs[name] = Proc(name, argv, self.home / "logs" / f"chaos-{name}.log",
                                f"http://127.0.0.1:{port}/metrics")
        self.start(name)

    def start(self, name: str) -> None:
        """Start (or restart) one process, metrics on its own port."""
        p = self.procs[name]
        p.log.parent.mkdir(parents=True, exist_ok=True)
        port = p.metrics_url.rsplit(":", 1)[1].split("/")[0]
        env = {**os.environ, "CITYSTREAM_METRICS__HOST": "127.0.0.1", "CITYSTREAM_METRICS__PORT": port}
        with open(p.log, "ab") as out:
            p.proc = subprocess.Popen(p.argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
        p.planned_down = False

    def kill(self, name: str) -> None:
        """SIGKILL a process (no flush, no commit)."""
        p = self.procs[name]
        p.planned_down = True
        if p.proc is not None and p.proc.poll() is None:
            p.proc.kill()
            p.proc.wait(30)

    def supervise(self) -> None:
        """Restart any process that exited by itself (like compose's ``restart: unless-stopped``)."""
        for p in self.procs.values():
            if not p.planned_down and p.proc is not None and p.proc.poll() is not None:
                p.unplanned_exits += 1
                self.echo(f"{p.name} exited with {p.proc.returncode}: restarting (log {p.log})")
                self.start(p.name)

    def stop(self, name: str, timeout_s: float = 120.0) -> int | None:
        """SIGTERM and wait (SIGKILL after ``timeout_s``); returns the exit code."""
        p = self.procs[name]
        p.planned_down = True
        return None if p.proc is None else terminate(p.proc, timeout_s)

    def wait(self, what: str, cond: Callable[[], bool], timeout_s: float) -> bool:
        """Poll ``cond`` (supervising meanwhile) until true or time runs out."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.supervise()
            if cond():
                return True
            time.sleep(0.5)
        self.echo(f"timed out after {timeout_s:.0f}s waiting for {what}")
        return False

    # --- faults ---------------------------------------------------------------------------
    def inject(self, fault: Fault) -> None:
        """Apply one fault and bring the target back after ``down_s``."""
        self.echo(f"t={time.monotonic() - self.started:6.1f}s fault {fault.kind} (down {fault.down_s}s)")
        if fault.kind.startswith("kill9_") and fault.kind != "kill9_mqtt":
            name = fault.kind.removeprefix("kill9_")
            self.kill(name)
            time.sleep(fault.down_s)
            self.start(name)
            return
        creds = local.credentials(self.home)
        if fault.kind in ("restart_mqtt", "kill9_mqtt"):
            server = mosquitto.server(self.settings)
            server.kill() if fault.kind == "kill9_mqtt" else server.stop()
            time.sleep(fault.down_s)
            mosquitto.up(self.settings, creds)
        elif fault.kind == "restart_kafka":
            kafka.server(self.settings).stop()
            time.sleep(fault.down_s)
            kafka.up(self.settings)


def isolated_stack(base: Settings, home: Path) -> tuple[Settings, Path]:
    """Start Mosquitto + Kafka under ``home`` on free ports; returns the run's settings and their file."""
    seed_settings = Settings.model_validate({"stack": {
        "home": str(home), "mqtt_port": free_port(), "kafka_port": free_port(), "kafka_controller_port": free_port(),
        "kafka_jars": str(base.stack.kafka_jars.resolve()), "kafka_heap": base.stack.kafka_heap}})
    local.up(seed_settings)
    settings = load_settings(local.config_file(seed_settings), {
        "gateway.state_dir": str(home / "gateway"), "gateway.drain_s": 90.0, "gateway.reconnect_max_s": 2.0,
        "sink.frames_dir": str(home / "frames"), "sink.instance_id": "chaos-sink",
        "worker.data_dir": str(home / "worker"), "worker.instance_id": "chaos-worker", "sink.query_port": 0,
        "log.level": "INFO"})
    path = home / "chaos.yaml"
    path.write_text(yaml.safe_dump(dump_settings(settings), allow_unicode=True))
    path.chmod(0o600)
    return settings, path


def start_pipeline(run: Run, duration_s: float) -> None:
    """Start sink, bridge and worker, wait until they are ready, then start the simulator."""
    run.add("sink", "sink")
    run.add("bridge", "bridge")
    run.add("worker", "worker")
    run.wait("the sink's query path", lambda: sink_ready(run.settings), 180)
    run.wait("the worker", lambda: metric_value(run.procs["worker"].metrics_url, "citystream_worker_ready") == 1, 240)
    run.wait("the bridge", lambda: metric_value(run.procs["bridge"].metrics_url,
                                                "citystream_bridge_mqtt_subscribed") == 1, 60)
    t = run.traffic
    # the simulator runs longer than the schedule; it is stopped (SIGTERM: drain) when the traffic window ends
    run.add("gateways", "gateway", "simulate", "--gateways", str(t.gateways), "--sensors", str(t.sensors),
            "--cameras", str(t.cameras), "--rate", str(t.rate_hz), "--camera-fps", str(t.camera_fps),
            "--duration", str(duration_s * 10), "--prefix", run.prefix)


def settle(run: Run, expected_readings: Callable[[], dict[str, int]]) -> None:
    """Wait until every published reading is in the view and the views stop changing (worker outputs)."""
    def all_stored() -> bool:
        try:
            seen = stored_reading_seqs(run.settings, run.prefix)
        except StoreError:
            return False
        lost: int = reconcile(expected_readings(), seen)["lost"]
        return lost == 0

    run.wait("every reading stored", all_stored, SETTLE_TIMEOUT_S)
    run.wait("the worker to analyse every frame", lambda: worker_caught_up(run.settings), SETTLE_TIMEOUT_S)
    previous: Any = None
    steady_since = time.monotonic()
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while time.monotonic() - steady_since < 10 and time.monotonic() < deadline:
        run.supervise()
        try:
            now = query_rows(run.settings, f"SELECT (SELECT count() FROM {schema.view_of(schema.PLATE_READS)}) AS p, "
                                           f"(SELECT count() FROM {schema.view_of(schema.ALERTS)}) AS a")[0]
        except StoreError:
            now = None
        if now != previous:
            previous, steady_since = now, time.monotonic()
        time.sleep(1.0)


def run_chaos(base: Settings, seed: int, duration_s: float, traffic: Traffic, repeats: int, keep: bool,
              echo: Callable[[str], None]) -> dict[str, Any]:
    """One seeded chaos run on an isolated stack; returns the verdict document."""
    home = Path(tempfile.mkdtemp(prefix=f"citystream-chaos-{seed}-"))
    echo(f"isolated stack under {home}")
    settings, config = isolated_stack(base, home)
    run = Run(settings, config, home, traffic, f"chaos{seed}", echo)
    faults = schedule(seed, duration_s, repeats)
    state_dir = settings.gateway.state_dir
    clean = False  # set once the run reconciled with nothing lost, doubled or left behind
    try:
        start_pipeline(run, duration_s)
        run.started = time.monotonic()
        echo(f"traffic for {duration_s:.0f}s, {len(faults)} faults: "
             + ", ".join(f"{f.at_s}s {f.kind}" for f in faults))
        for fault in faults:
            due = run.started + fault.at_s
            run.wait("the next fault", lambda: time.monotonic() >= due, duration_s * 2)  # noqa: B023
            run.inject(fault)
        run.wait("the end of the traffic", lambda: time.monotonic() - run.started >= duration_s, duration_s * 2)
        echo("traffic over: draining the gateways' spools")
        run.stop("gateways", timeout_s=180)
        settle(run, lambda: published_seqs(state_dir, run.prefix)["reading"])
        expected = published_seqs(state_dir, run.prefix)
        readings = reconcile(expected["reading"], stored_reading_seqs(settings, run.prefix))
        caught_up = worker_caught_up(settings)
        frames = reconcile(expected["frame"], frames_in_kafka(settings))
        duplicates = view_duplicates(settings)
        left = spool_left(state_dir, run.prefix)
        clean = readings["lost"] + frames["lost"] == 0 and not any(duplicates.values()) and caught_up and left == 0
    finally:
        codes = {name: run.stop(name) for name in ("gateways", "worker", "bridge", "sink") if name in run.procs}
        local.down(settings)
        logs = ""
        if keep:
            logs = str(home / "logs")
        elif not clean or any(p.unplanned_exits for p in run.procs.values()):  # keep the evidence
            logs = tempfile.mkdtemp(prefix=f"citystream-chaos-{seed}-logs-")
            shutil.copytree(home / "logs", logs, dirs_exist_ok=True)
        if not keep:
            shutil.rmtree(home, ignore_errors=True)
    lost = readings["lost"] + frames["lost"]
    dup_total = sum(duplicates.values())
    return {"seed": seed, "duration_s": duration_s, "published": readings["published"] + frames["published"],
            "stored": readings["stored"] + frames["stored"], "lost": lost, "view_duplicates": dup_total,
            "faults": [asdict(f) for f in faults],
            "unplanned_exits": {n: p.unplanned_exits for n, p in run.procs.items()},
            "streams": {"reading": readings, "frame": frames, "views": duplicates},
            "worker_caught_up": caught_up, "left_in_spools": left, "stage_exit_codes": codes, "logs": logs,
            "ok": lost == 0 and dup_total == 0 and caught_up and left == 0}


@click.command("chaos")
@click.option("--seed", type=int, required=True, help="Seed of the fault schedule (same seed, same schedule).")
@click.option("--duration", type=click.FloatRange(min=30), default=240.0, show_default=True,
              help="Seconds of traffic under faults.")
@click.option("--repeats", type=click.IntRange(1, 10), default=2, show_default=True,
              help="How often each fault kind is injected.")
@click.option("--gateways", type=click.IntRange(1, 100), default=4, show_default=True)
@click.option("--sensors", type=click.IntRange(1, 100), default=10, show_default=True, help="Sensors per gateway.")
@click.option("--rate", type=click.FloatRange(0.1, 100), default=5.0, show_default=True,
              help="Readings per second per sensor.")
@click.option("--cameras", type=click.IntRange(0, 8), default=1, show_default=True, help="Cameras per gateway.")
@click.option("--keep", is_flag=True, help="Keep the run's home (logs, data) for inspection.")
@click.option("--json", "as_json", is_flag=True, help="Progress on stderr; the verdict as JSON on stdout.")
@config_option
@click.pass_context
def chaos(ctx: click.Context, seed: int, duration: float, repeats: int, gateways: int, sensors: int, rate: float,
          cameras: int, keep: bool, as_json: bool, config: str | None) -> None:
    """Run the pipeline under seeded faults (kill -9, broker restarts) and check nothing was lost or doubled."""
    base = settings_of(ctx)
    traffic = Traffic(gateways, sensors, rate, cameras)

    def echo(message: str) -> None:
        click.echo(message, err=as_json)

    try:
        result = run_chaos(base, seed, duration, traffic, repeats, keep, echo)
    except (RuntimeError, OSError, mosquitto.StackError) as exc:
        fail(f"chaos run could not complete: {exc}")
    if as_json:
        print_json(result)
    else:
        echo(("OK  " if result["ok"] else "FAILED  ") + f"seed {seed}: published {result['published']} stored "
             f"{result['stored']} lost {result['lost']} view duplicates {result['view_duplicates']} "
             f"unplanned exits {result['unplanned_exits']}")
    if not result["ok"]:
        sys.exit(1)
