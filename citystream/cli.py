"""``citystream``: the one command. Exit codes: 0 ok, 1 failure, 2 bad usage or configuration.

Stage subcommands live beside their stage (``ingest/bridge/cli.py`` …) and are imported only
when invoked, so ``citystream --help`` stays fast and one stage's heavy imports never slow another.

A Kafka, ClickHouse or MQTT failure that a subcommand does not handle itself ends in one line on
stderr and exit 1 (``citystream: <command>: <server> unreachable at <address>: <reason>``), never a
traceback (:func:`server_failure`); any other exception keeps its traceback, as a bug should.
"""

from __future__ import annotations

import importlib
import socket
import sys
from collections.abc import MutableMapping
from types import TracebackType
from typing import Any, NoReturn

import click
import orjson

from citystream.logs import setup_logging
from citystream.settings import ConfigError, Settings, load_settings

# name -> (module, attribute, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str, str]] = {
    "stack": ("citystream.stack.cli", "stack",
              "Local stack: Mosquitto + Kafka as processes, ClickHouse embedded."),
    "gateway": ("citystream.ingest.gateway.cli", "gateway", "Run an edge gateway, or simulate a city of them."),
    "bridge": ("citystream.ingest.bridge.cli", "bridge", "MQTT -> Kafka bridge (acks devices once Kafka has it)."),
    "worker": ("citystream.processors.cli", "worker", "Faust worker: plates, faces, sensor windows, alerts."),
    "plates": ("citystream.processors.plates.cli", "plates", "Read Thai licence plates from images offline."),
    "faces": ("citystream.processors.faces.cli", "faces", "Match faces in images against a watchlist offline."),
    "watchlist": ("citystream.processors.watchlists.cli", "watchlist", "Manage plate and face watchlists."),
    "sink": ("citystream.sinks.cli", "sink", "Kafka -> ClickHouse sink (commits offsets after insert)."),
    "topics": ("citystream.topics_cli", "topics", "Create/update the Kafka topics of the topic map from settings."),
    "migrate": ("citystream.schemas.cli", "migrate", "Apply ClickHouse migrations in order (idempotent)."),
    "query": ("citystream.sinks.query_cli", "query", "Run read-only SQL against the analytics store."),
    "demo": ("citystream.demo", "demo", "Run the whole pipeline end to end on the local stack."),
    "chaos": ("citystream.chaos", "chaos", "Run the pipeline under a seeded fault schedule; reconcile every seq."),
    "bench": ("citystream.bench.cli", "bench", "Benchmarks: every stage against its ceiling in the same run."),
    "privacy": ("citystream.privacy", "privacy", "Data-subject search/erase by plate, audit log, retention (PDPA)."),
    "status": ("citystream.status", "status", "Health, throughput, lag, DLQ rate, latency, gateways of a deployment."),
    "console": ("citystream.console.cli", "console", "Control-room web console: cameras, live feed, sensors."),
}


SETTINGS_KEY, COMMAND_KEY = "citystream.settings", "citystream.command"  # ctx.meta, for failure messages
# librdkafka error codes that mean "no broker answered" (transport, all brokers down, timed out, resolve)
KAFKA_UNREACHABLE = {-195, -187, -185, -193}
# where an OSError was raised -> which server it was talking to
SERVER_OF_LIBRARY = (("/paho/", "mqtt"), ("/confluent_kafka/", "kafka"), ("/clickhouse_connect/", "clickhouse"),
                     ("/urllib3/", "clickhouse"))


def fail(message: str, code: int = 1) -> NoReturn:
    """Print an error on stderr and exit with ``code``."""
    click.echo(f"citystream: {message}", err=True)
    sys.exit(code)


def config_option(func: Any) -> Any:
    """``--config`` on a subcommand (same meaning as the root option)."""
    return click.option("--config", "-c", type=click.Path(dir_okay=False), default=None,
                        help="YAML settings file.")(func)


def settings_of(ctx: click.Context, **overrides: Any) -> Settings:
    """Load and validate settings once per command; bad config exits 2 with field paths."""
    path = None
    node: click.Context | None = ctx
    while node is not None and path is None:
        path = node.params.get("config")
        node = node.parent
    try:
        settings = load_settings(path, {k: v for k, v in overrides.items() if v is not None})
    except ConfigError as exc:
        fail(str(exc), 2)
    setup_logging(settings.log)
    ctx.meta[SETTINGS_KEY] = settings
    ctx.meta[COMMAND_KEY] = " ".join(reversed([c.info_name or "" for c in _chain(ctx) if c.parent is not None]))
    return settings


def _chain(ctx: click.Context) -> list[click.Context]:
    node: click.Context | None = ctx
    found = []
    while node is not None:
        found.append(node)
        node = node.parent
    return found


def print_json(doc: Any) -> None:
    """One JSON document on stdout."""
    click.echo(orjson.dumps(doc, default=str).decode())


def _address(server: str, settings: Settings | None) -> str:
    if settings is None:
        return "(settings not loaded)"
    return {"kafka": settings.kafka.bootstrap, "clickhouse": settings.clickhouse.dsn,
            "mqtt": f"{settings.mqtt.host}:{settings.mqtt.port}"}[server]


def _library_server(tb: TracebackType | None) -> str | None:
    """The server an OSError came from, by the library that raised it (innermost match wins)."""
    found = None
    while tb is not None:
        path = tb.tb_frame.f_code.co_filename
        found = next((server for part, server in SERVER_OF_LIBRARY if part in path), found)
        tb = tb.tb_next
    return found


def _kafka_failure(exc: BaseException) -> tuple[str, bool] | None:
    kafka = sys.modules.get("confluent_kafka")
    if kafka is None or not isinstance(exc, kafka.KafkaException):
        return None
    err = exc.args[0] if exc.args else None
    if isinstance(err, kafka.KafkaError):
        return err.str(), err.code() in KAFKA_UNREACHABLE
    return str(exc), False


def _store_failure(exc: BaseException) -> tuple[str, bool] | None:
    store = sys.modules.get("citystream.clickhouse")
    if store is not None and isinstance(exc, store.StoreError):
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return text, text.startswith("cannot connect")
    driver = sys.modules.get("clickhouse_connect.driver.exceptions")
    if driver is not None and isinstance(exc, driver.OperationalError):
        return str(exc).splitlines()[0], True
    return None


def server_failure(exc: BaseException, meta: MutableMapping[str, Any]) -> str | None:
    """One line for a Kafka, ClickHouse or MQTT failure in ``exc`` (or what caused it); None for anything else."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        server, found = "kafka", _kafka_failure(cause)
        if found is None:
            server, found = "clickhouse", _store_failure(cause)
        if found is None and isinstance(cause, (ConnectionError, TimeoutError, socket.gaierror)):
            library = _library_server(cause.__traceback__)
            if library is not None:
                server, found = library, (cause.strerror or str(cause) or type(cause).__name__, True)
        if found is not None:
            reason, unreachable = found
            command = meta.get(COMMAND_KEY) or "command"
            where = _address(server, meta.get(SETTINGS_KEY))
            return (f"{command}: {server} unreachable at {where}: {reason}" if unreachable
                    else f"{command}: {server} ({where}): {reason}")
        cause = cause.__cause__ or cause.__context__
    return None


class LazyGroup(click.Group):
    """Imports a subcommand's module only when that subcommand runs; server failures end in one line, exit 1."""

    def invoke(self, ctx: click.Context) -> Any:
        """Run the subcommand; a known Kafka/ClickHouse/MQTT failure prints one line on stderr and exits 1."""
        try:
            return super().invoke(ctx)
        except ConfigError as exc:  # raised after settings loaded, e.g. a metrics port already taken
            fail(str(exc), 2)
        except Exception as exc:
            message = server_failure(exc, ctx.meta)
            if message is None:
                raise
            fail(message)

    def list_commands(self, ctx: click.Context) -> list[str]:
        """All subcommand names."""
        return sorted(SUBCOMMANDS)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """List subcommands from the static table (no imports)."""
        with formatter.section("Commands"):
            formatter.write_dl([(name, SUBCOMMANDS[name][2]) for name in self.list_commands(ctx)])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        """Import and return one subcommand."""
        if cmd_name not in SUBCOMMANDS:
            return None
        module_name, attr, _help = SUBCOMMANDS[cmd_name]
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:  # a role's image installs only its own extra (README, Install)
            fail(f"{cmd_name}: needs the Python module '{exc.name}', which is not installed here; "
                 f"install the extra of this role (pip install 'citystream[...]')")
        command: click.Command = getattr(module, attr)
        return command


@click.group(cls=LazyGroup)
@click.option("--config", "-c", type=click.Path(dir_okay=False), default=None,
              help="YAML settings file (default: $CITYSTREAM_CONFIG or .citystream/citystream.yaml).")
@click.version_option(package_name="citystream")
def main(config: str | None) -> None:
    """citystream: smart-city streams from edge gateways into ClickHouse."""
