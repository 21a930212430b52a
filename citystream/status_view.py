"""The one-screen view of ``citystream status``: rich tables of stages, lag, latency and recent gateways."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

GATEWAY_ROWS = 10


def _num(value: float | None, unit: str = "") -> str:
    if value is None:
        return "-"
    return f"{value:,.1f}{unit}" if value < 100 else f"{value:,.0f}{unit}"


def _stages(doc: dict[str, Any]) -> Table:
    verdict = Text("all healthy", style="green") if doc["healthy"] else Text("NOT HEALTHY", style="bold red")
    table = Table(title=Text.assemble("citystream status  ", doc["at"], "  ", verdict), title_justify="left",
                  expand=True)
    for column, justify in (("stage", "left"), ("health", "left"), ("per s", "right"), ("dlq/s", "right"),
                            ("detail", "left")):
        table.add_column(column, justify=justify, no_wrap=column != "detail")  # type: ignore[arg-type]
    for name, stage in doc["stages"].items():
        health = Text("ok", style="green") if stage["healthy"] else Text("DOWN", style="bold red")
        table.add_row(name, health, _num(stage.get("throughput_per_s")), _num(stage.get("dlq_per_s")),
                      stage["detail"])
    return table


def _lag(doc: dict[str, Any]) -> Table:
    table = Table(title="consumer lag (messages)", title_justify="left", expand=True)
    for column in ("stage", "group", "total", "by topic"):
        table.add_column(column, justify="right" if column == "total" else "left")
    for stage, lag in doc["lag"].items():
        if "error" in lag:
            table.add_row(stage, lag["group"], "-", Text(lag["error"], style="red"))
        else:
            topics = "  ".join(f"{t} {n:,}" for t, n in lag["topics"].items() if n) or "none waiting"
            table.add_row(stage, lag["group"], f"{lag['total']:,}", topics)
    return table


def _ago(when: Any) -> str:
    if not isinstance(when, datetime):
        return str(when)
    stamp = when if when.tzinfo else when.replace(tzinfo=UTC)
    return f"{max(0.0, (datetime.now(UTC) - stamp).total_seconds()):.0f}s ago"


def _gateways(doc: dict[str, Any]) -> Table:
    rows = doc["gateways"]
    table = Table(title=f"gateways seen in the last {doc['gateways_minutes']} min: {len(rows)}", title_justify="left",
                  expand=True)
    for column in ("tenant", "gateway", "last seen", "readings", "status"):
        table.add_column(column, justify="right" if column in ("readings", "status") else "left")
    for row in rows[:GATEWAY_ROWS]:
        table.add_row(row["tenant"], row["gateway_id"], _ago(row["last_seen"]), f"{row['readings']:,}",
                      f"{row['status_events']:,}")
    if len(rows) > GATEWAY_ROWS:
        table.add_row("…", f"{len(rows) - GATEWAY_ROWS} more", "", "", "")
    return table


def render(doc: dict[str, Any]) -> RenderableType:
    """The whole screen for one status document."""
    e2e = doc["e2e_latency"]
    over = "last interval" if e2e["over"] == "interval" else "since the sink started"
    summary = Text(f"e2e latency p50 {_num(e2e['p50_s'], 's')}  p99 {_num(e2e['p99_s'], 's')} ({over})   "
                   f"dead letters {_num(doc['dlq_per_s'])}/s")
    parts: list[RenderableType] = [_stages(doc), _lag(doc), summary, _gateways(doc)]
    parts += [Text(note, style="yellow") for note in doc["notes"]]
    return Group(*parts)


def show(view: RenderableType) -> None:
    """Print one screen on stdout."""
    Console().print(view)


@contextmanager
def live(enabled: bool = True) -> Iterator[Callable[[dict[str, Any]], None]]:
    """A screen refreshed in place with each new document (a no-op updater when disabled)."""
    if not enabled:
        yield lambda _doc: None
        return
    with Live(auto_refresh=False, console=Console()) as screen:
        yield lambda doc: screen.update(render(doc), refresh=True)
