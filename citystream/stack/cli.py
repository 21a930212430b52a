"""``citystream stack up | down | status [--json]``."""

from __future__ import annotations

from pathlib import Path

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
    """Stop the processes this stack started (data is kept)."""
    from citystream.stack import local
    stopped = local.down(settings_of(ctx))
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
