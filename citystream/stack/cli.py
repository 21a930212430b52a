"""``citystream stack up | down | status [--json]``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from citystream.cli import fail, print_json, settings_of


@click.group()
def stack() -> None:
    """Local stack: Mosquitto + Kafka as processes, ClickHouse embedded."""


@stack.command("up")
@click.option("--json", "as_json", is_flag=True, help="Print status as JSON.")
@click.pass_context
def stack_up(ctx: click.Context, as_json: bool) -> None:
    """Start what is not running, create topics, write the stack's settings file."""
    from citystream.stack import local
    from citystream.stack.mosquitto import StackError
    settings = settings_of(ctx)
    try:
        st = local.up(settings)
    except StackError as exc:
        fail(str(exc))
    if as_json:
        print_json(st)
    else:
        click.echo(f"mqtt {st['mqtt']['host']}:{st['mqtt']['port']}  kafka {st['kafka']['bootstrap']}  "
                   f"clickhouse {st['clickhouse']['dsn']}\nsettings for other processes: {st['config']}")


@stack.command("down")
@click.pass_context
def stack_down(ctx: click.Context) -> None:
    """Stop the live pipeline, the demo console and the servers this stack started (data is kept)."""
    from citystream.console.demo_login import stop_console
    from citystream.stack import local, pipeline
    settings = settings_of(ctx)
    stopped = {**pipeline.stop(settings), "console": stop_console(settings), **local.down(settings)}
    click.echo(" ".join(f"{k}={'stopped' if v else 'not running'}" for k, v in stopped.items()))


@stack.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@click.pass_context
def stack_status(ctx: click.Context, as_json: bool) -> None:
    """Where each server is and whether it runs."""
    from citystream.stack import local
    st = local.status(settings_of(ctx))
    if as_json:
        print_json(st)
        return
    click.echo(f"mqtt       {st['mqtt']['host']}:{st['mqtt']['port']}  "
               f"{'running pid ' + str(st['mqtt']['pid']) if st['mqtt']['running'] else 'stopped'}")
    click.echo(f"kafka      {st['kafka']['bootstrap']}  "
               f"{'running pid ' + str(st['kafka']['pid']) if st['kafka']['running'] else 'stopped'}")
    click.echo(f"clickhouse {st['clickhouse']['dsn']}")


@stack.command("certs")
@click.option("--dir", "directory", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Where ca.crt, ca.key, server.crt and server.key go (e.g. deploy/compose/certs).")
@click.option("--host", "hosts", multiple=True, required=True,
              help="A name or IP address gateways use to reach the broker (repeatable).")
def stack_certs(directory: Path, hosts: tuple[str, ...]) -> None:
    """Make a test CA and an MQTT server certificate for these hosts (kept while current)."""
    from citystream.stack import certs
    files = certs.ensure(directory, list(hosts))
    click.echo(f"CA for gateways (mqtt.tls.ca_file): {files.ca_cert}\n"
               f"server certificate and key for the broker: {files.server_cert} {files.server_key} (0600)")


@stack.command("rotate-key")
@click.option("--tenant", default="*", show_default=True, help="Tenant whose pseudonym key is replaced ('*': the "
              "key of every tenant without one of its own); a tenant without a key gets its own.")
@click.option("--json", "as_json", is_flag=True, help="Print {tenant, fingerprint, previous, retired_file}.")
@click.pass_context
def stack_rotate_key(ctx: click.Context, tenant: str, as_json: bool) -> None:
    """Give a tenant a new random pseudonym key; the old one is kept aside (0600). Restart the worker after."""
    from citystream.stack import local
    try:
        done = local.rotate_key(settings_of(ctx), tenant)
    except ValueError as exc:
        fail(str(exc), 2)
    if as_json:
        print_json(done)
        return
    click.echo(f"new pseudonym key for tenant {tenant} (fingerprint {done['fingerprint']}); restart the worker")
    if done["retired_file"]:
        click.echo(f"the previous key ({done['previous']}) is kept in {done['retired_file']} until plate_reads "
                   "has expired past it (docs/PRIVACY.md, key rotation)")


@stack.group("pipeline")
def stack_pipeline() -> None:
    """A live pipeline in the background: simulated gateways, bridge, worker, sink (stopped by 'stack down')."""


def _traffic_options(func: Any) -> Any:
    from citystream.stack.pipeline import Traffic
    plan = Traffic()
    for name, dest, kind, default, text in reversed([
            ("--gateways", "gateways", click.IntRange(1, 50), plan.gateways, "Simulated gateways."),
            ("--cameras", "cameras", click.IntRange(0, 8), plan.cameras, "Cameras per gateway."),
            ("--sensors", "sensors", click.IntRange(0, 64), plan.sensors, "Sensors per gateway."),
            ("--rate", "rate", click.FloatRange(0.1, 50), plan.rate_hz,
             "Readings per second per sensor (and frames per second per camera)."),
            ("--round", "round_s", click.FloatRange(10), plan.round_s,
             "Seconds per round (each with a PM2.5 haze and a canal rise)."),
            ("--duration", "duration", click.FloatRange(1), plan.duration_s,
             "Seconds of traffic in all, then it stops by itself.")]):
        func = click.option(name, dest, type=kind, default=default, show_default=True, help=text)(func)
    return func


@stack_pipeline.command("start")
@_traffic_options
@click.option("--demo-watchlist", is_flag=True,
              help="Put two plates the first simulated camera shows on the watchlist (demo data, one day).")
@click.option("--json", "as_json", is_flag=True, help="Print status as JSON.")
@click.pass_context
def pipeline_start(ctx: click.Context, gateways: int, cameras: int, sensors: int, rate: float, round_s: float,
                   duration: float, demo_watchlist: bool, as_json: bool) -> None:
    """Start what is not running; return once the sink answers queries (processes keep running)."""
    from citystream.console.demo_login import console_line
    from citystream.settings import config_path
    from citystream.stack import pipeline
    from citystream.stack.mosquitto import StackError
    settings = settings_of(ctx)
    path = config_path(ctx.find_root().params.get("config"))
    if path is None:
        fail("no settings file: run 'citystream stack up' first (it writes .citystream/citystream.yaml)", 2)
    plan = pipeline.Traffic(gateways, cameras, sensors, rate, round_s, duration)
    try:
        st = pipeline.start(settings, path, plan)
    except StackError as exc:
        fail(str(exc))
    watched = pipeline.watch_demo_plates(settings, plan) if demo_watchlist else []
    if as_json:
        print_json({**st, "demo_watchlist": [f"{e.registration} {e.province}" for e in watched]})
        return
    _echo_status(st)
    if watched:
        click.echo("on the watchlist for the demo: " + ", ".join(f"{e.registration} {e.province}" for e in watched))
    click.echo("live pipeline running; stop it (and the console and the stack): citystream stack down")
    if console_line(settings):
        click.echo(console_line(settings))


@stack_pipeline.command("stop")
@click.pass_context
def pipeline_stop(ctx: click.Context) -> None:
    """Stop the traffic, the bridge, the worker and the sink (last)."""
    from citystream.stack import pipeline
    stopped = pipeline.stop(settings_of(ctx))
    click.echo(" ".join(f"{k}={'stopped' if v else 'not running'}" for k, v in stopped.items()))


@stack_pipeline.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@click.pass_context
def pipeline_status(ctx: click.Context, as_json: bool) -> None:
    """Whether each process of the live pipeline runs, and its log."""
    from citystream.stack import pipeline
    st = pipeline.status(settings_of(ctx))
    if as_json:
        print_json(st)
    else:
        _echo_status(st)


def _echo_status(st: dict[str, Any]) -> None:
    for name, proc in st.items():
        if isinstance(proc, dict):
            state = f"running pid {proc['pid']}" if proc["running"] else "stopped"
            click.echo(f"{name:8s} {state:18s} log {proc['log']}")


@stack_pipeline.command("traffic", hidden=True)
@_traffic_options
@click.pass_context
def pipeline_traffic(ctx: click.Context, gateways: int, cameras: int, sensors: int, rate: float, round_s: float,
                     duration: float) -> None:
    """The live pipeline's simulated gateways, in rounds, until SIGTERM or --duration (run by 'start')."""
    import signal
    import threading

    from citystream.stack import pipeline
    settings = settings_of(ctx)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    signal.signal(signal.SIGINT, lambda signum, frame: stop.set())
    rounds = pipeline.run_traffic(settings, pipeline.Traffic(gateways, cameras, sensors, rate, round_s, duration), stop)
    click.echo(f"traffic stopped after {rounds} rounds")
