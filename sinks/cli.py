"""``citystream sink``: run the Kafka -> ClickHouse sink until SIGTERM/SIGINT (then flush, commit, exit 0)."""

from __future__ import annotations

import signal
import sys
import threading
from types import FrameType

import click
from prometheus_client import REGISTRY

from citystream.cli import config_option, fail, settings_of
from citystream.clickhouse import StoreError
from citystream.metrics import serve_metrics
from citystream.schemas.migrate import MigrationError
from citystream.sinks.clickhouse import run_sink


@click.command("sink")
@click.option("--dsn", default=None, help="ClickHouse DSN (chdb://PATH or http(s)://host:port); default from settings.")
@config_option
@click.pass_context
def sink(ctx: click.Context, dsn: str | None, config: str | None) -> None:
    """Consume the topic map's event topics into ClickHouse; offsets are committed after each insert."""
    settings = settings_of(ctx, **{"clickhouse.dsn": dsn})
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    serve_metrics(settings.metrics, REGISTRY)
    try:
        code = run_sink(settings, REGISTRY, stop)
    except (StoreError, MigrationError) as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"cannot start the sink: {exc}")
    sys.exit(code)
