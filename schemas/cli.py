"""``citystream migrate``: apply the ClickHouse migrations (idempotent)."""

from __future__ import annotations

import click

from citystream.cli import config_option, fail, print_json, settings_of
from citystream.clickhouse import StoreBusy, StoreError, chdb_path, connect, read_owner
from citystream.schemas.migrate import MigrationError, cluster_sql, distributed_sql, load_migrations
from citystream.schemas.migrate import migrate as apply_migrations
from citystream.stack.keys import known_tenants


@click.command("migrate")
@click.option("--dsn", default=None, help="ClickHouse DSN (chdb://PATH or http(s)://host:port); default from settings.")
@click.option("--json", "as_json", is_flag=True, help="Print {database, applied} as JSON.")
@click.option("--cluster-sql", "cluster", default=None, metavar="CLUSTER",
              help="Print the cluster variant (ReplicatedMergeTree ON CLUSTER + Distributed) and exit; no connection.")
@config_option
@click.pass_context
def migrate(ctx: click.Context, dsn: str | None, as_json: bool, cluster: str | None, config: str | None) -> None:
    """Apply numbered SQL migrations in order into clickhouse.database; re-running is a no-op.

    Where the user may manage access, also the roles (0008) and, for every tenant the settings know, an
    analyst role with row policies.
    """
    settings = settings_of(ctx, **{"clickhouse.dsn": dsn})
    if cluster is not None:
        print_cluster_sql(settings.clickhouse.database, cluster)
        return
    path = chdb_path(settings.clickhouse.dsn)
    if path is not None:
        owner = read_owner(path)
        if owner is not None:
            fail(f"{path} is owned by a running sink (pid {owner.pid}); it applies migrations itself at start")
    try:
        client = connect(settings, database=False)
        applied = apply_migrations(client, settings.clickhouse.database,
                                   retention_days=settings.retention.tables,
                                   image_days=settings.retention.dead_letter_image_days,
                                   tenants=known_tenants(settings, settings.stack.home))
    except StoreBusy as exc:
        fail(f"{exc}; stop it, or let the sink apply migrations at start")
    except (StoreError, MigrationError) as exc:
        fail(str(exc))
    except Exception as exc:  # a ClickHouse error in a statement
        fail(f"migration failed: {str(exc).splitlines()[0]}")
    if as_json:
        print_json({"database": settings.clickhouse.database, "applied": applied})
    else:
        click.echo(f"{settings.clickhouse.database}: " + (", ".join(applied) if applied else "up to date"))


def print_cluster_sql(database: str, cluster: str) -> None:
    """Print every migration's cluster statements, then the Distributed tables, as one SQL script."""
    for mig in load_migrations():
        click.echo(f"-- {mig.name}")
        for statement in cluster_sql(mig, database, cluster):
            click.echo(statement + ";\n")
    click.echo("-- Distributed tables over the raw tables, sharded by event_id")
    for statement in distributed_sql(database, cluster):
        click.echo(statement + ";\n")
