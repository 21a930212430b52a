"""``citystream gateway [--duration S]`` runs one gateway; ``citystream gateway simulate`` runs a city of them.

Exit codes: 0 after a clean stop (SIGTERM/SIGINT or ``--duration``: capture stops, the spool is
drained for up to ``gateway.drain_s``, what is left stays on disk for the next start), 2 for invalid
configuration, an unusable state directory, a ``/metrics`` port that cannot be bound or a login the
broker refuses at start. A broker that is unreachable at start is not an error: capture goes to the spool.
"""

from __future__ import annotations

import logging
import re
import signal
import sqlite3
import threading
from types import FrameType
from typing import Any

import click
from prometheus_client import CollectorRegistry

from citystream.cli import config_option, fail, print_json, settings_of
from citystream.metrics import serve_metrics

log = logging.getLogger(__name__)


def _stop_on_signals(stop: threading.Event) -> None:
    def handler(signum: int, frame: FrameType | None) -> None:
        log.info("signal received; stopping", extra={"signal": signal.Signals(signum).name})
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def _check_prefix(ctx: click.Context, param: click.Parameter, value: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,40}", value):
        raise click.BadParameter("letters, digits, '_', '.' or '-' only (1-40 characters)")
    return value


@click.group(invoke_without_command=True)
@config_option
@click.option("--duration", type=float, default=None, help="Stop after this many seconds (default: run until SIGTERM).")
@click.pass_context
def gateway(ctx: click.Context, config: str | None, duration: float | None) -> None:
    """Run an edge gateway (cameras + sensors -> spool -> MQTT), or `simulate` a city of them."""
    if ctx.invoked_subcommand is not None:
        return
    from citystream.ingest.gateway.gateway import AuthRefused, Gateway
    from citystream.ingest.gateway.publisher import GatewayMetrics

    settings = settings_of(ctx)
    if not settings.gateway.cameras and not settings.gateway.sensors:
        log.warning("gateway has no cameras and no sensors: only heartbeats will be sent")
    registry = CollectorRegistry()
    metrics = GatewayMetrics(registry)
    try:
        gw = Gateway(settings.mqtt, settings.gateway, metrics)
    except (OSError, sqlite3.Error) as exc:
        fail(f"gateway.state_dir {settings.gateway.state_dir}: cannot open the spool: {exc}", 2)
    serve_metrics(settings.metrics, registry)
    stop = threading.Event()
    _stop_on_signals(stop)
    try:
        gw.start(connect_timeout_s=settings.gateway.connect_timeout_s)
    except AuthRefused as exc:
        fail(f"{exc} (check gateway.username / gateway.password and the broker's password file)", 2)
    log.info("gateway running", extra={"gateway": settings.gateway.gateway_id, "cameras": len(settings.gateway.cameras),
                                       "sensors": len(settings.gateway.sensors)})
    stop.wait(duration)
    gw.stop()
    log.info("gateway stopped", extra={"gateway": settings.gateway.gateway_id, "left_in_spool": gw.spool.count})


@gateway.command("simulate")
@config_option
@click.option("--gateways", type=click.IntRange(1, 1000), default=1, show_default=True)
@click.option("--cameras", type=click.IntRange(0, 64), default=1, show_default=True, help="Cameras per gateway.")
@click.option("--sensors", type=click.IntRange(0, 256), default=3, show_default=True, help="Sensors per gateway.")
@click.option("--rate", type=click.FloatRange(0.01, 1000), default=1.0, show_default=True,
              help="Readings per second per sensor, and frames per second per camera (at most 30).")
@click.option("--camera-fps", type=click.FloatRange(0.01, 60), default=None,
              help="Frames per second (default: --rate).")
@click.option("--duration", type=click.FloatRange(0.1), default=30.0, show_default=True, help="Seconds.")
@click.option("--width", type=click.IntRange(64, 3840), default=640, show_default=True)
@click.option("--height", type=click.IntRange(64, 2160), default=360, show_default=True)
@click.option("--prefix", default="sim", show_default=True, callback=_check_prefix,
              help="Gateway ids are <prefix>-gw-NNN.")
@click.option("--json", "as_json", is_flag=True, help="Print the counts as one JSON object.")
@click.pass_context
def simulate_cmd(ctx: click.Context, config: str | None, gateways: int, cameras: int, sensors: int, rate: float,
                 camera_fps: float | None, duration: float, width: int, height: int, prefix: str,
                 as_json: bool) -> None:
    """Simulate GATEWAYS x (CAMERAS + SENSORS) devices publishing realistic traffic to the broker."""
    from citystream.ingest.gateway.gateway import AuthRefused
    from citystream.ingest.gateway.simulator import simulate

    settings = settings_of(ctx)
    registry = CollectorRegistry()
    serve_metrics(settings.metrics, registry)
    stop = threading.Event()
    _stop_on_signals(stop)
    try:
        stats = simulate(settings, gateways, cameras, sensors, rate, duration, camera_fps=camera_fps,
                         frame_size=(width, height), prefix=prefix, registry=registry, stop=stop)
    except AuthRefused as exc:
        fail(str(exc), 2)
    if as_json:
        print_json(stats.as_dict())
        return
    click.echo(f"{gateways} gateways x ({cameras} cameras + {sensors} sensors) for {stats.duration_s:.1f}s")
    for stream in ("reading", "frame", "status"):
        click.echo(f"  {stream:8s} captured {stats.captured.get(stream, 0):8d}  "
                   f"published {stats.published.get(stream, 0):8d}")
    if stats.dropped or stats.left_in_spool:
        click.echo(f"  dropped {stats.dropped}  left in spool {stats.left_in_spool}")


def _identity_options(func: Any) -> Any:
    func = click.option("--gateway", "gateway_id", required=True, help="Gateway id (as in its topics).")(func)
    return click.option("--tenant", required=True, help="Tenant (municipality) the gateway belongs to.")(func)


@gateway.command("provision")
@config_option
@_identity_options
@click.option("--rotate", is_flag=True, help="Replace the password of an already provisioned gateway.")
@click.option("--json", "as_json", is_flag=True, help='Print {"username", "password", "topic_prefix"}.')
@click.pass_context
def provision_cmd(ctx: click.Context, config: str | None, tenant: str, gateway_id: str, rotate: bool,
                  as_json: bool) -> None:
    """Create a login for one gateway, allowed to publish only under {root}/TENANT/GATEWAY/ (shown once)."""
    from citystream.ingest.provision import provision
    from citystream.stack.identities import IdentityError, username_of

    settings = settings_of(ctx)
    try:
        username_of(tenant, gateway_id)
    except IdentityError as exc:
        fail(str(exc), 2)
    try:
        cred = provision(settings, tenant, gateway_id, rotate=rotate)
    except IdentityError as exc:
        fail(str(exc), 1)
    if as_json:
        print_json(cred)
        return
    click.echo(f"provisioned {tenant}/{gateway_id}: may publish only under {cred['topic_prefix']}/")
    click.echo("gateway settings (the password is not stored and is shown only now):")
    click.echo(f"  gateway: {{tenant: {tenant}, gateway_id: {gateway_id}, username: {cred['username']}, "
               f"password: {cred['password']}}}")


@gateway.command("revoke")
@config_option
@_identity_options
@click.option("--json", "as_json", is_flag=True, help="Print the removed gateway as JSON.")
@click.pass_context
def revoke_cmd(ctx: click.Context, config: str | None, tenant: str, gateway_id: str, as_json: bool) -> None:
    """Remove one gateway's login; the running broker disconnects it and refuses it from then on."""
    from citystream.ingest.provision import revoke
    from citystream.stack.identities import IdentityError

    settings = settings_of(ctx)
    try:
        removed = revoke(settings, tenant, gateway_id)
    except IdentityError as exc:
        fail(str(exc), 1)
    if as_json:
        print_json(removed.public())
        return
    click.echo(f"revoked {removed.username} ({removed.topic_prefix}/)")


@gateway.command("list")
@config_option
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
@click.pass_context
def list_cmd(ctx: click.Context, config: str | None, as_json: bool) -> None:
    """List the provisioned gateways of the local stack (no secrets)."""
    from citystream.ingest.provision import listing
    from citystream.stack.identities import IdentityError

    try:
        rows = listing(settings_of(ctx))
    except IdentityError as exc:
        fail(str(exc), 1)
    if as_json:
        print_json(rows)
        return
    for row in rows:
        click.echo(f"{row['username']:40s} {row['topic_prefix']}/  since {row['provisioned_at']}")
