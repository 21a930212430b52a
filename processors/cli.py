"""``citystream worker``: run the Faust worker until SIGTERM/SIGINT, then stop cleanly (exit 0)."""

from __future__ import annotations

import logging

import click
from confluent_kafka import KafkaException
from prometheus_client import REGISTRY

from citystream.cli import config_option, fail, settings_of
from citystream.metrics import serve_metrics

log = logging.getLogger(__name__)


@click.command()
@config_option
@click.pass_context
def worker(ctx: click.Context, config: str | None) -> None:
    """Plates, faces, sensor windows and alerts (Faust); /metrics when metrics.port is set."""
    import faust

    from citystream.processors.app import create_app, prepare_topics
    from citystream.processors.watchdog import STALLED_EXIT
    from citystream.stack.mosquitto import StackError

    settings = settings_of(ctx)
    try:
        prepare_topics(settings)
    except (StackError, KafkaException, RuntimeError) as exc:
        fail(f"cannot prepare Kafka topics: {exc}")
    serve_metrics(settings.metrics, REGISTRY)
    context = create_app(settings, REGISTRY)
    log.info("worker starting", extra={"app_id": context.app.conf.id, "vision_processes": context.pool.processes,
                                       "bootstrap": settings.kafka.bootstrap})
    runner = faust.Worker(context.app, loglevel=settings.log.level, quiet=True, redirect_stdouts=False,
                          override_logging=False)
    runner.spinner = None  # no terminal spinner escapes in the logs
    code = 0
    try:
        runner.execute_from_commandline()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    finally:
        if context.stalled:
            code = STALLED_EXIT
        context.pool.shutdown()
        log.info("worker stopped", extra={"exit_code": code})
    raise SystemExit(code)
