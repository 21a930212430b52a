"""``citystream stack pipeline start | stop | status``: a live pipeline on the local stack, in the background.

``make demo`` runs its verdict with stages of its own and stops them; then it starts this pipeline so
the console has a store to read and something arriving: simulated gateways (``traffic``), the bridge,
the worker and the sink, each a detached process with a pid file under ``<home>/pipeline/`` and a log
in ``<home>/logs/pipeline-<name>.log``. ``start`` starts only what is not running and returns once
the sink answers read-only queries (the console's path to the embedded store). ``stop`` (also run by
``citystream stack down``) stops the traffic first, so the gateways drain into the bridge, then the
bridge and the worker, and the sink last, so it stores what they flushed.

Delivery is the stages' own (see their docstrings): stopping the pipeline with SIGTERM loses nothing
that a gateway had acknowledged; what a gateway had not yet sent stays in its spool for the next start.

The traffic runs in rounds of ``round_s`` seconds (each round has its PM2.5 haze episode and canal
rise, so sensor alerts are raised while someone watches) and ends after ``duration_s`` in total;
the sink, bridge and worker then idle until stopped. Nothing here runs past ``stop``.

For the demo (``start --demo-watchlist``), two plates that the first simulated camera shows are put on
the watchlist (the compacted ``watchlists`` topic, through the watchlist code, expiring after a day), so
watchlist hits and their alerts arrive in the console as well.
"""

from __future__ import annotations

import os
import random
import sys
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from citystream.settings import Settings
from citystream.stack.mosquitto import StackError
from citystream.stack.procs import Managed, free_port, log_tail

if TYPE_CHECKING:
    from citystream.processors.watchlists.watchlists import WatchlistEntry
    from citystream.settings.gateway import SimulatedCamera

STAGES = ("sink", "bridge", "worker")  # started in this order (the sink first: it owns the store)
TRAFFIC = "traffic"
NAMES = (*STAGES, TRAFFIC)
CONFIG_FILE = "config"  # <home>/pipeline/config: the settings file the running pipeline was started with
TRAFFIC_COMMAND = ("stack", "pipeline", "traffic")
PREFIX = "live"  # simulated gateway ids are live-gw-NNN
DEMO_WATCHLIST = 2  # plates of the first simulated camera put on the watchlist by --demo-watchlist


@dataclass(frozen=True)
class Traffic:
    """What the simulated gateways of the live pipeline send."""

    gateways: int = 2
    cameras: int = 1
    sensors: int = 4
    rate_hz: float = 1.0
    round_s: float = 180.0
    duration_s: float = 8 * 3600.0  # one shift, then the traffic stops by itself

    def argv(self) -> list[str]:
        """The ``stack pipeline traffic`` options for this plan."""
        return ["--gateways", str(self.gateways), "--cameras", str(self.cameras), "--sensors", str(self.sensors),
                "--rate", str(self.rate_hz), "--round", str(self.round_s), "--duration", str(self.duration_s)]


def _dir(settings: Settings) -> Path:
    return settings.stack.home.resolve() / "pipeline"


def _config(settings: Settings, config: Path | None) -> Path:
    """The settings file of the pipeline: the one given, else the one it was started with, else the stack's."""
    if config is not None:
        return config.resolve()
    try:
        return Path((_dir(settings) / CONFIG_FILE).read_text(encoding="utf-8").strip())
    except FileNotFoundError:
        return settings.stack.home.resolve() / "citystream.yaml"


def _command(name: str) -> tuple[str, ...]:
    return TRAFFIC_COMMAND if name == TRAFFIC else (name,)


def processes(settings: Settings, config: Path | None = None) -> dict[str, Managed]:
    """The managed processes of this stack home's live pipeline (found by pid file and command line)."""
    path = _config(settings, config)
    home = settings.stack.home.resolve()
    return {name: Managed(name, _dir(settings) / f"{name}.pid", home / "logs" / f"pipeline-{name}.log",
                          f"--config {path} {' '.join(_command(name))}") for name in NAMES}


def start(settings: Settings, config: Path, traffic: Traffic, ready_timeout_s: float = 120.0) -> dict[str, Any]:
    """Start what is not running (sink, bridge, worker, traffic) and wait for the sink's query path."""
    from citystream.demo import sink_ready
    from citystream.stack import local

    st = local.status(settings)
    if not (st["mqtt"]["running"] and st["kafka"]["running"]):
        raise StackError("the local stack is not running: run 'citystream stack up' first")
    config = config.resolve()
    running = {name: proc.pid() for name, proc in processes(settings).items()}
    if any(running.values()) and _config(settings, None) != config:
        raise StackError(f"a live pipeline with other settings ({_config(settings, None)}) is running: "
                         "stop it first ('citystream stack pipeline stop')")
    _dir(settings).mkdir(parents=True, exist_ok=True)
    (_dir(settings) / CONFIG_FILE).write_text(f"{config}\n", encoding="utf-8")
    procs = processes(settings, config)
    for name in NAMES:
        proc = procs[name]
        if proc.pid() is not None:
            continue
        env = {**os.environ, "CITYSTREAM_METRICS__HOST": "127.0.0.1", "CITYSTREAM_METRICS__PORT": str(free_port())}
        extra = traffic.argv() if name == TRAFFIC else []
        proc.start([sys.executable, "-m", "citystream", "--config", str(config), *_command(name), *extra], env=env)
    deadline = time.monotonic() + ready_timeout_s
    while not sink_ready(settings):
        gone = [name for name, proc in procs.items() if proc.pid() is None]
        if gone or time.monotonic() > deadline:
            stop(settings)
            why = f"{gone[0]} exited" if gone else f"the sink did not answer queries within {ready_timeout_s:.0f}s"
            log = procs[gone[0] if gone else "sink"].log_file
            raise StackError(f"live pipeline: {why}; see {log}:\n{log_tail(log)}")
        time.sleep(0.5)
    return status(settings)


def stop(settings: Settings) -> dict[str, bool]:
    """Stop the traffic, then the bridge and the worker, the sink last; True for each process stopped."""
    procs = processes(settings)
    stopped = {name: procs[name].stop(timeout_s=60.0) for name in (TRAFFIC, "bridge", "worker", "sink")}
    (_dir(settings) / CONFIG_FILE).unlink(missing_ok=True)
    return stopped


def status(settings: Settings) -> dict[str, Any]:
    """Each process of the live pipeline: running, pid, log file (the ``pipeline status --json`` contract)."""
    procs = processes(settings)
    return {"config": str(_config(settings, None)),
            **{name: {"running": (pid := proc.pid()) is not None, "pid": pid, "log": str(proc.log_file)}
               for name, proc in procs.items()}}


def run_traffic(settings: Settings, traffic: Traffic, stop_event: threading.Event) -> int:
    """Simulate rounds of gateway traffic until ``stop_event`` or ``traffic.duration_s``; returns rounds run."""
    from citystream.ingest.gateway.simulator import simulate

    deadline = time.monotonic() + traffic.duration_s
    rounds = 0
    while not stop_event.is_set() and (left := deadline - time.monotonic()) > 0:
        simulate(settings, gateways=traffic.gateways, cameras=traffic.cameras, sensors=traffic.sensors,
                 rate=traffic.rate_hz, duration=min(traffic.round_s, left), prefix=PREFIX, stop=stop_event)
        rounds += 1
    return rounds


def scenes_of(spec: SimulatedCamera) -> list[tuple[Any, str]]:
    """The scenes a simulated camera shows with their plate labels, drawn as ``cameras.SimulatedSource`` draws them."""
    from citystream.ingest.gateway import scenes

    rng = random.Random(spec.seed or random.Random(spec.device_id).randint(0, 2**31))
    out = []
    for index in range(spec.scenes):
        frame, label = scenes.road_scene(rng, spec.width, spec.height)
        if spec.face_every and index % spec.face_every == spec.face_every - 1:
            frame = scenes.with_face(frame, rng)
        out.append((frame, label))
    return out


def first_camera(settings: Settings, traffic: Traffic) -> SimulatedCamera | None:
    """The first simulated camera of the live traffic (as the traffic process configures it), if any."""
    from citystream.ingest.gateway.simulator import gateway_settings

    cams = gateway_settings(settings.gateway, 0, traffic.cameras, traffic.sensors, traffic.rate_hz,
                            traffic.round_s, prefix=PREFIX).cameras
    return cams[0] if cams else None  # type: ignore[return-value]  # the simulator makes simulated cameras


def watch_demo_plates(settings: Settings, traffic: Traffic) -> list[WatchlistEntry]:
    """Put plates the first simulated camera shows on the watchlist (demo data, expiring after a day)."""
    from citystream.processors.watchlists import watchlists

    camera = first_camera(settings, traffic)
    labels = [label for _frame, label in scenes_of(camera)] if camera else []
    now, tenant = datetime.now(UTC), settings.gateway.tenant
    entries = []
    for label in [lab for lab in labels if lab][:DEMO_WATCHLIST]:
        registration, _, province = label.rpartition(" ")
        entry = watchlists.WatchlistEntry(
            entry_id=watchlists.plate_entry_id(tenant, registration, province), tenant=tenant, kind="plate",
            label="demo: simulated stolen car", registration=registration, province=province,
            reason="demo: a plate the simulated camera shows", legal_basis="demo data (simulated plates, no person)",
            expires_at=now + timedelta(days=1), created_at=now, created_by="citystream stack pipeline")
        watchlists.publish(settings, entry)
        entries.append(entry)
    return entries
