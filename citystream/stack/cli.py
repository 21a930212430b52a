"""``citystream stack up | down | status [--json]``."""

from __future__ import annotations

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
