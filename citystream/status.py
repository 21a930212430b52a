"""``citystream status [--json] [--watch]``: is data flowing, through which stages, from which gateways, how late.

One screen for a running deployment: each stage's health (MQTT, bridge, Kafka, worker, sink,
ClickHouse), throughput and dead letters per second, consumer lag per group, end-to-end latency and
the gateways seen in the last minutes. The bridge, worker and sink are read on their metrics ports
(``/readyz`` and ``/metrics``, two scrapes ``--interval`` apart for the rates): found among the local
processes that use the same settings file (:mod:`citystream.status_probe`), or given with
``--target STAGE=URL`` for a remote deployment. Servers are checked directly (:mod:`citystream.status_servers`).

A process stage is healthy when at least one instance runs, every instance answers ``/readyz`` with
200, and the servers it needs are healthy (bridge: MQTT and Kafka; worker: Kafka; sink: Kafka and
ClickHouse). Exit code 0 when every stage is healthy, 1 otherwise (with ``--watch``: of the last refresh).

``--json`` prints one document per refresh (stable contract; more keys may be added)::

    {"at": ISO time, "healthy": bool,
     "stages": {NAME: {"healthy": bool, "detail": str, ...}},   # mqtt bridge kafka worker sink clickhouse
     "lag": {"worker"|"sink"|"sink_frames": {"group": str, "total": int, "topics": {topic: int}} | {"group", "error"}},
     "dlq_per_s": float | null,
     "e2e_latency": {"p50_s": float | null, "p99_s": float | null, "over": "interval" | "since_start"},
     "gateways": [{"tenant", "gateway_id", "last_seen", "readings", "status_events"}],
     "gateways_minutes": int}

Process stages add ``ready``, ``throughput_per_s``, ``dlq_per_s`` and ``instances``
(``[{"url", "pid", "ready", "error"}]``).
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import click

from citystream import status_probe as probe
from citystream import status_servers as servers
from citystream.cli import fail, print_json, settings_of
from citystream.clickhouse import StoreError
from citystream.settings import Settings, config_path

NEEDS = {"bridge": ("mqtt", "kafka"), "worker": ("kafka",), "sink": ("kafka", "clickhouse")}
THROUGHPUT = {"bridge": ("citystream_bridge_produced_total",),
              "worker": ("citystream_worker_readings_total", "citystream_worker_frames_total"),
              "sink": ("citystream_sink_rows_inserted_total",)}
ORDER = ("mqtt", "bridge", "kafka", "worker", "sink", "clickhouse")
E2E = "citystream_sink_e2e_latency_seconds"
QUIET = ("urllib3", "clickhouse_connect", "librdkafka")  # status reports their failures itself


@dataclass(frozen=True)
class Options:
    """What one status run reads and how long it waits."""

    targets: tuple[probe.Target, ...]
    interval_s: float
    timeout_s: float
    gateways_minutes: int


def scrape_all(targets: tuple[probe.Target, ...], timeout: float) -> list[probe.Scrape]:
    """One round of scrapes of every target."""
    return [probe.scrape(t, timeout) for t in targets]


def _process_stage(stage: str, before: list[probe.Scrape], after: list[probe.Scrape],
                   servers_doc: dict[str, dict[str, Any]]) -> dict[str, Any]:
    mine = [s for s in after if s.target.stage == stage]
    earlier = [s for s in before if s.target.stage == stage]
    problems = [] if mine else [f"no running {stage} found (pass --target {stage}=http://HOST:PORT)"]
    for s in mine:
        where = f"{s.target.url}" + (f" (pid {s.target.pid})" if s.target.pid else "")
        if s.error:
            problems.append(f"{where} {s.error}")
        elif not s.ready:
            waiting = ", ".join(f"{k}={v:g}" for k, v in s.gauges.items() if v < 1)
            problems.append(f"{where} not ready ({waiting or '/readyz 503'})")
    problems += [f"needs {name}: not healthy" for name in NEEDS[stage] if not servers_doc[name]["healthy"]]
    ready = bool(mine) and all(s.ready for s in mine)
    rate = probe.rate(earlier, mine, THROUGHPUT[stage])
    dlq = probe.rate(earlier, mine, (f"citystream_{stage}_dlq_total",))
    detail = "; ".join(problems) or f"{len(mine)} instance(s) ready"
    return {"healthy": not problems, "ready": ready, "detail": detail, "throughput_per_s": rate, "dlq_per_s": dlq,
            "instances": [{"url": s.target.url, "pid": s.target.pid, "ready": s.ready, "error": s.error}
                          for s in mine]}


def latency(before: list[probe.Scrape], after: list[probe.Scrape]) -> dict[str, Any]:
    """Sink e2e latency p50/p99 over the interval between the scrapes, else since the sinks started."""
    now = probe.buckets([s for s in after if s.target.stage == "sink"], E2E)
    then = probe.buckets([s for s in before if s.target.stage == "sink"], E2E)
    delta = {le: count - then.get(le, 0.0) for le, count in now.items()}
    over, chosen = ("interval", delta) if delta and max(delta.values()) > 0 else ("since_start", now)
    return {"p50_s": probe.quantile(0.5, chosen), "p99_s": probe.quantile(0.99, chosen), "over": over}


def check_servers(settings: Settings, timeout: float) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """MQTT, Kafka and ClickHouse health, and consumer lag (an error per group while Kafka is down)."""
    admin = servers.admin_client(settings, timeout)
    kafka = servers.kafka_check(admin, settings, timeout)
    groups = servers.consumer_groups(settings)
    lag = servers.lag(admin, settings, timeout) if kafka["healthy"] else {
        stage: {"group": group, "error": "kafka not healthy"} for stage, group in groups.items()}
    docs = {"mqtt": servers.mqtt_check(settings, timeout), "kafka": kafka,
            "clickhouse": servers.clickhouse_check(settings, timeout)}
    return docs, lag


def build(settings: Settings, options: Options, before: list[probe.Scrape], after: list[probe.Scrape],
          notes: list[str]) -> dict[str, Any]:
    """The status document from two rounds of scrapes and a check of the servers."""
    server_docs, lag = check_servers(settings, options.timeout_s)
    stages = {name: server_docs[name] if name in server_docs else _process_stage(name, before, after, server_docs)
              for name in ORDER}
    gateways: list[dict[str, Any]] = []
    if server_docs["clickhouse"]["healthy"]:
        try:
            gateways = servers.gateways_seen(settings, options.gateways_minutes, options.timeout_s)
        except StoreError as exc:
            notes = [*notes, f"gateways not read: {exc}"]
    dlq = [d for name in NEEDS if (d := stages[name]["dlq_per_s"]) is not None]
    return {"at": datetime.now(UTC).isoformat(timespec="seconds"),
            "healthy": all(s["healthy"] for s in stages.values()), "stages": stages, "lag": lag,
            "dlq_per_s": sum(dlq) if dlq else None, "e2e_latency": latency(before, after),
            "gateways": gateways, "gateways_minutes": options.gateways_minutes, "notes": notes}


def _targets(ctx: click.Context, given: tuple[str, ...]) -> tuple[tuple[probe.Target, ...], list[str]]:
    try:
        explicit = [probe.parse_target(t) for t in given]
    except ValueError as exc:
        fail(str(exc), 2)
    found, notes = probe.discover(config_path(ctx.params.get("config") or ctx.find_root().params.get("config")))
    named = {t.stage for t in explicit}
    return tuple(explicit + [t for t in found if t.stage not in named]), notes


def _quiet() -> None:
    for name in QUIET:
        logging.getLogger(name).setLevel(logging.CRITICAL)


@click.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON (one document per refresh).")
@click.option("--watch", is_flag=True, help="Refresh every --interval seconds until interrupted.")
@click.option("--count", type=click.IntRange(min=0), default=0,
              help="With --watch: stop after N refreshes (0 = never).")
@click.option("--interval", type=click.FloatRange(min=0.5), default=2.0, show_default=True,
              help="Seconds between the scrapes that rates are computed from (and between refreshes).")
@click.option("--target", "targets", multiple=True, metavar="STAGE=URL",
              help="Metrics endpoint of a bridge/worker/sink, e.g. worker=http://worker:9100 (repeatable; "
                   "default: the local processes using the same settings file).")
@click.option("--gateways-minutes", type=click.IntRange(min=1, max=1440), default=5, show_default=True,
              help="List gateways seen in this many last minutes.")
@click.option("--timeout", type=click.FloatRange(min=0.5), default=5.0, show_default=True,
              help="Seconds to wait for each server or endpoint.")
@click.option("--config", "-c", type=click.Path(dir_okay=False), default=None, help="YAML settings file.")
@click.pass_context
def status(ctx: click.Context, as_json: bool, watch: bool, count: int, interval: float, targets: tuple[str, ...],
           gateways_minutes: int, timeout: float, config: str | None) -> None:
    """Health, throughput, lag, DLQ rate, e2e latency and recent gateways of a running deployment."""
    settings = settings_of(ctx)
    _quiet()
    found, notes = _targets(ctx, targets)
    options = Options(found, interval, timeout, gateways_minutes)
    from citystream.status_view import render, show
    if not watch:
        before = scrape_all(options.targets, timeout)
        time.sleep(interval)
        doc = build(settings, options, before, scrape_all(options.targets, timeout), notes)
        if as_json:
            print_json(doc)
        else:
            show(render(doc))
        sys.exit(0 if doc["healthy"] else 1)
    sys.exit(_watch(settings, options, notes, as_json, count))


def _watch(settings: Settings, options: Options, notes: list[str], as_json: bool, count: int) -> int:
    from citystream.status_view import live

    healthy, before, done = False, scrape_all(options.targets, options.timeout_s), 0
    with live(enabled=not as_json) as update:
        try:
            while count == 0 or done < count:
                time.sleep(options.interval_s)
                after = scrape_all(options.targets, options.timeout_s)
                doc = build(settings, options, before, after, notes)
                if as_json:
                    print_json(doc)
                else:
                    update(doc)
                healthy, before, done = doc["healthy"], after, done + 1
        except KeyboardInterrupt:
            pass
    return 0 if healthy else 1
