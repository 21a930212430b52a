"""``citystream bench``: every stage against a ceiling measured in the same run.

Without ``--config`` the bench starts its own Mosquitto + Kafka in a temporary home on free loopback
ports (ClickHouse is embedded) and removes it afterwards; with ``--config`` it uses that running
stack, in topics, groups and databases of its own. Progress goes to stderr, the table to stdout, the
JSON document to ``--json PATH``. A stage that cannot run is reported with ``"error"``; the run goes
on and the exit code is 1.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import orjson
from rich.console import Console
from rich.table import Table

from citystream.bench.common import SCALES, Entry, Procs, Report, Scale, start_stack, stop_stack
from citystream.cli import config_option, fail

REPO = Path(__file__).resolve().parent.parent
Step = tuple[str, list[str], Callable[[], dict[str, Entry]]]


def _explicit_config(ctx: click.Context) -> str | None:
    node: click.Context | None = ctx
    while node is not None:
        if node.params.get("config"):
            return str(node.params["config"])
        node = node.parent
    return None


def _steps(config: Path, procs: Procs, workdir: Path, scale: Scale, report: Report) -> list[Step]:
    from citystream.bench import ingest_bench as ib
    from citystream.bench import store_bench as sb
    from citystream.bench import vision_bench as vb
    from citystream.bench import worker_bench as wb
    from citystream.bench import worker_loop as wl

    def ceiling(key: str) -> float | None:
        value = report.doc["ceilings"].get(key, {}).get("value")
        return float(value) if value else None

    def capacity() -> float:
        value = report.doc["stages"].get("bridge_small", {}).get("value")
        if not value:
            raise RuntimeError("needs the measured bridge capacity (bridge_small failed)")
        return float(value)

    skipped = {"skipped": f"not run at scale '{scale.name}'"}
    e2e_keys = [f"e2e_{q}_s_at_{p}pct" for p in (25, 50, 75) for q in ("p50", "p95", "p99")]
    return [
        ("raw MQTT QoS 1, 200 B", ["ceiling:mqtt_small"],
         lambda: {"ceiling:mqtt_small": ib.mqtt_ceiling(config, "reading", scale.mqtt_small)}),
        ("raw MQTT QoS 1, 100 KiB", ["ceiling:mqtt_frames"],
         lambda: {"ceiling:mqtt_frames": ib.mqtt_ceiling(config, "frame", scale.mqtt_frames)}),
        ("bridge, 200 B", ["bridge_small"], lambda: {"bridge_small": ib.bridge_stage(
            config, procs, "reading", scale.mqtt_small, ceiling("mqtt_small"))}),
        ("bridge, 100 KiB", ["bridge_frames"], lambda: {"bridge_frames": ib.bridge_stage(
            config, procs, "frame", scale.mqtt_frames, ceiling("mqtt_frames"))}),
        ("e2e latency at 25/50/75 % load", e2e_keys,
         lambda: ib.e2e_latency(config, procs, workdir, capacity(), scale.e2e_seconds)),
        ("bridge 1 vs 2 replicas", ["bridge_scaling"], lambda: {"bridge_scaling": ib.bridge_scaling(
            config, procs, scale.mqtt_small) if scale.scaling else skipped}),
        ("worker 1 vs 2 processes", ["worker_scaling"], lambda: {"worker_scaling": vb.worker_scaling(
            config, procs, scale.worker_frames) if scale.scaling else skipped}),
        ("Kafka, insert_arrow, sink", ["ceiling:kafka_produce", "ceiling:kafka_consume", "ceiling:insert_arrow",
                                       "sink_rows"],
         lambda: sb.store_stages(config, procs, workdir, scale.kafka_rows, scale.sink_batch)),
        ("JPEG decode, plates, faces, accuracy", ["ceiling:jpeg_decode", "plates_fps", "faces_fps",
                                                  "plate_accuracy"],
         lambda: vb.vision_in_child(scale.vision_frames, scale.accuracy_n)),
        ("alert latency, idle and behind a frame backlog", ["alert_p99_s_idle", "alert_p99_s_frame_backlog"],
         lambda: wb.alert_latency(config, procs, scale.name) if scale.scaling else {
             "alert_p99_s_idle": skipped, "alert_p99_s_frame_backlog": skipped}),
        ("worker pause while a second one joins", ["rebalance_pause_s"],
         lambda: wb.rebalance_pause(config, procs, scale.name) if scale.scaling else {"rebalance_pause_s": skipped}),
        ("worker restarts with a backlog (loop)", ["worker_restarts"],
         lambda: wl.restarts_entry(config, procs, scale.name)),
        ("worker rebalances under load (loop)", ["worker_rebalances"],
         lambda: wl.rebalances_entry(config, procs, scale.name)),
    ]


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 100 else f"{value:,.0f}"
    return "" if value is None else str(value)


def table(doc: dict[str, Any]) -> Table:
    """The report as a rich table: stages first, then the raw ceilings."""
    out = Table(title=f"citystream bench ({doc['mode']})")
    for column in ("key", "value", "unit", "ceiling", "ratio", "note"):
        out.add_column(column, justify="right" if column in ("value", "ceiling", "ratio") else "left")
    for section in ("stages", "ceilings"):
        for key, e in doc[section].items():
            note = e.get("error") or e.get("skipped") or ("" if e.get("zero_loss", True) else f"LOST {e['lost']}")
            out.add_row(key if section == "stages" else f"[dim]{key} (ceiling)[/]", _fmt(e.get("value")),
                        e.get("unit", ""), _fmt(e.get("ceiling")), _fmt(e.get("ratio")), note)
    return out


def run(config: Path | None, scale: Scale, console: Console, workdir: Path, only: list[str] | None = None
        ) -> dict[str, Any]:
    """Start the stack when needed, run every step, stop what was started; returns the JSON document."""
    report = Report(scale.name)
    procs = Procs(workdir)
    own = config is None
    home = workdir / "stack"
    try:
        if config is None:
            home.mkdir()
            with console.status("starting Mosquitto + Kafka on free ports"):
                config = start_stack(home, REPO / ".cache" / "kafka")
        steps = [st for st in _steps(config, procs, workdir, scale, report)  # loops (long) only when named
                 if (any(w in k for w in only for k in st[1]) if only else not st[0].endswith("(loop)"))]
        for i, (title, keys, fn) in enumerate(steps, 1):
            started = time.monotonic()
            with console.status(f"[{i}/{len(steps)}] {title}"):
                error = report.run(keys, fn)
                procs.stop_all()
            took = time.monotonic() - started
            if error:
                console.print(f"[red]✗[/] {title} ({took:.0f} s): {error}")
            else:
                console.print(f"[green]✓[/] {title} ({took:.0f} s)")
    finally:
        procs.stop_all()
        if own:
            stop_stack(home)
    doc = report.finish()
    doc["stack"] = "own (temporary)" if own else "given by --config"
    return doc


@click.command("bench")
@config_option
@click.option("--quick", is_flag=True, help="Small loads (about two minutes).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None, help="Write the JSON here.")
@click.option("--scale", "scale_name", type=click.Choice(sorted(SCALES)), default=None, hidden=True,
              help="Load scale (tiny is for the test suite).")
@click.option("--only", default="", hidden=True, help="Comma-separated words; run only steps whose keys contain one.")
@click.option("--keep", is_flag=True, hidden=True, help="Keep the work directory (logs of stage processes).")
@click.pass_context
def bench(ctx: click.Context, config: str | None, quick: bool, json_path: str | None, scale_name: str | None,
          only: str, keep: bool) -> None:
    """Benchmarks: each stage as a ratio to a raw ceiling measured in the same run."""
    scale = SCALES[scale_name or ("quick" if quick else "full")]
    explicit = _explicit_config(ctx)
    if explicit is not None and not Path(explicit).is_file():
        fail(f"config file not found: {explicit}", 2)
    console = Console(stderr=True)
    workdir = Path(tempfile.mkdtemp(prefix="citystream-bench-"))
    try:
        words = [w for w in only.split(",") if w]
        doc = run(Path(explicit) if explicit else None, scale, console, workdir, words)
    finally:
        if keep:
            console.print(f"work directory kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    Console(width=max(Console().width, 110)).print(table(doc))
    if json_path:
        Path(json_path).write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
    errors = [k for sec in ("stages", "ceilings") for k, e in doc[sec].items() if "error" in e]
    if errors:
        fail(f"{len(errors)} figure(s) could not be measured: {', '.join(errors)}", 1)
