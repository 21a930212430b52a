"""``citystream query``: read-only SQL against the analytics store, wherever it is.

Routing is :func:`citystream.clickhouse.query_arrow`'s: a server DSN directly; an embedded path
through the owning sink's query endpoint when a sink runs, else opened directly (read-only).
"""

from __future__ import annotations

import base64
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import click

from citystream.cli import config_option, fail, print_json, settings_of
from citystream.clickhouse import StoreError, query_rows


def jsonable(value: Any) -> Any:
    """A query value as JSON-friendly data: UTC ISO timestamps, base64 for non-UTF-8 bytes."""
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, bytes):
        try:
            return value.decode()
        except UnicodeDecodeError:
            return base64.b64encode(value).decode()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value


@click.command("query")
@click.argument("sql")
@click.option("--dsn", default=None, help="ClickHouse DSN (chdb://PATH or http(s)://host:port); default from settings.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array of row objects.")
@config_option
@click.pass_context
def query(ctx: click.Context, sql: str, dsn: str | None, as_json: bool, config: str | None) -> None:
    """Run read-only SQL (no writes or DDL) in clickhouse.database and print the rows."""
    settings = settings_of(ctx, **{"clickhouse.dsn": dsn})
    try:
        rows = [{k: jsonable(v) for k, v in row.items()} for row in query_rows(settings, sql)]
    except StoreError as exc:
        fail(str(exc))
    if as_json:
        print_json(rows)
        return
    if rows:
        click.echo("\t".join(rows[0]))
    for row in rows:
        click.echo("\t".join(str(v) for v in row.values()))
