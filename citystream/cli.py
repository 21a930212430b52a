"""``citystream``: the one command. Exit codes: 0 ok, 1 failure, 2 bad usage or configuration.

Stage subcommands live beside their stage (``ingest/bridge_cli.py`` …) and are imported only
when invoked, so ``citystream --help`` stays fast and one stage's heavy imports never slow another.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any, NoReturn

import click
import orjson

from citystream.logs import setup_logging
from citystream.settings import ConfigError, Settings, load_settings

# name -> (module, attribute, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str, str]] = {
    "stack": ("citystream.stack.cli", "stack",
              "Local stack: Mosquitto + Kafka as processes, ClickHouse embedded."),
    "gateway": ("citystream.ingest.gateway_cli", "gateway", "Run an edge gateway, or simulate a city of them."),
    "bridge": ("citystream.ingest.bridge_cli", "bridge", "MQTT -> Kafka bridge (acks devices once Kafka has it)."),
    "worker": ("citystream.processors.cli", "worker", "Faust worker: plates, faces, sensor windows, alerts."),
    "plates": ("citystream.processors.plates_cli", "plates", "Read Thai licence plates from images offline."),
    "faces": ("citystream.processors.faces_cli", "faces", "Match faces in images against a watchlist offline."),
    "watchlist": ("citystream.processors.watchlist_cli", "watchlist", "Manage plate and face watchlists."),
    "sink": ("citystream.sinks.cli", "sink", "Kafka -> ClickHouse sink (commits offsets after insert)."),
    "topics": ("citystream.topics_cli", "topics", "Create/update the Kafka topics of the topic map from settings."),
    "migrate": ("citystream.schemas.cli", "migrate", "Apply ClickHouse migrations in order (idempotent)."),
    "query": ("citystream.sinks.query_cli", "query", "Run read-only SQL against the analytics store."),
    "demo": ("citystream.demo", "demo", "Run the whole pipeline end to end on the local stack."),
    "chaos": ("citystream.chaos", "chaos", "Run the pipeline under a seeded fault schedule; reconcile every seq."),
    "bench": ("citystream.bench.cli", "bench", "Benchmarks: every stage against its ceiling in the same run."),
}


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
    return settings


def print_json(doc: Any) -> None:
    """One JSON document on stdout."""
    click.echo(orjson.dumps(doc, default=str).decode())


def _unfinished(name: str, help_text: str) -> click.Command:
    def run() -> None:
        fail(f"'{name}' is not implemented yet in this version", 1)

    return click.Command(name, callback=run, help=f"{help_text} (not implemented yet)",
                         context_settings={"ignore_unknown_options": True, "allow_extra_args": True})


class LazyGroup(click.Group):
    """Imports a subcommand's module only when that subcommand runs."""

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
        module_name, attr, help_text = SUBCOMMANDS[cmd_name]
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name is None or not (module_name + ".").startswith(exc.name + "."):
                raise
            return _unfinished(cmd_name, help_text)
        command: click.Command = getattr(module, attr)
        return command


@click.group(cls=LazyGroup)
@click.option("--config", "-c", type=click.Path(dir_okay=False), default=None,
              help="YAML settings file (default: $CITYSTREAM_CONFIG or .citystream/citystream.yaml).")
@click.version_option(package_name="citystream")
def main(config: str | None) -> None:
    """citystream: smart-city streams from edge gateways into ClickHouse."""
