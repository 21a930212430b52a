"""``citystream demo``: the whole pipeline end to end on the local stack, with a verdict.

It starts the sink, the bridge and (unless ``--no-worker``) the worker as real processes, waits until
an MQTT probe is acknowledged by the bridge (which it does only once Kafka has it) and the sink
serves queries, runs the traffic simulator for ``--duration`` seconds, waits for the sink to store
what was published (and for the worker's plate reads to settle), stops the stages with SIGTERM and
reports: ``published``, ``stored``, ``lost``, ``duplicates`` (sensor readings of this run, counted in
the analyst views), ``dlq`` (dead letters since the run started: demo traffic is all valid) and
end-to-end latency ``ingested_at - captured_at`` (p50/p99). With ``--json`` the last stdout line is
that JSON object. Exit 1 if anything was lost, doubled or dead-lettered, or a stage did not stop cleanly.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from prometheus_client.parser import text_string_to_metric_families

from citystream.cli import config_option, fail, print_json, settings_of
from citystream.clickhouse import StoreError, chdb_path, query_rows, read_owner
from citystream.console.demo_login import console_line
from citystream.ingest import mqtt_tls, provision
from citystream.schemas import migrate as schema
from citystream.schemas.events import DeviceState, DeviceStatus, make_event_id
from citystream.schemas.topics import mqtt_topic
from citystream.schemas.wire import to_json
from citystream.settings import Settings, config_path
from citystream.stack import local
from citystream.stack.procs import free_port, terminate


@dataclass
class Stage:
    """One pipeline process started by the demo."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path
    metrics_url: str
    exit_code: int | None = None


@dataclass
class Pipeline:
    """The stage processes of one demo run."""

    stages: list[Stage] = field(default_factory=list)

    def start(self, name: str, config: Path, home: Path) -> Stage:
        """Start ``citystream <name>`` with the given settings file, output to a log file, /metrics on a free port."""
        log = home / "logs" / f"demo-{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        port = free_port()
        env = {**os.environ, "CITYSTREAM_METRICS__HOST": "127.0.0.1", "CITYSTREAM_METRICS__PORT": str(port)}
        with open(log, "ab") as out:
            proc = subprocess.Popen([sys.executable, "-m", "citystream", "--config", str(config), name],
                                    stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
        stage = Stage(name, proc, log, f"http://127.0.0.1:{port}/metrics")
        self.stages.append(stage)
        return stage

    def check_alive(self) -> None:
        """Raise if a stage has exited."""
        for st in self.stages:
            if st.proc.poll() is not None:
                raise RuntimeError(f"{st.name} exited with {st.proc.returncode}; see {st.log}")

    def stop(self, timeout_s: float = 60.0) -> dict[str, int | None]:
        """SIGTERM every stage (sink last, so it stores what the others flushed); returns exit codes."""
        for st in sorted(self.stages, key=lambda s: s.name == "sink"):
            st.exit_code = terminate(st.proc, timeout_s)
        return {st.name: st.exit_code for st in self.stages}


def _wait(predicate: Any, timeout_s: float, what: str, pipeline: Pipeline, interval_s: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        pipeline.check_alive()
        value = predicate()
        if value:
            return value
        time.sleep(interval_s)
    raise RuntimeError(f"timed out after {timeout_s:.0f}s waiting for {what}")


def metric_value(url: str, name: str) -> float:
    """One sample of a stage's ``/metrics`` (0 when absent or unreachable)."""
    try:
        text = urllib.request.urlopen(url, timeout=5).read().decode()
    except OSError:
        return 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                return float(sample.value)
    return 0.0


def probe_bridge(settings: Settings, pipeline: Pipeline, timeout_s: float) -> None:
    """Publish status probes over MQTT until the bridge acks one, which it does only once Kafka has it."""
    bridge = next(st for st in pipeline.stages if st.name == "bridge")
    gateway = f"probe-{uuid.uuid4().hex[:8]}"  # a gateway identity of its own, revoked after the probe
    cred = provision.provision(settings, settings.gateway.tenant, gateway)
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=gateway, protocol=mqtt.MQTTv5)
    client.username_pw_set(cred["username"], cred["password"])
    mqtt_tls.configure(client, settings.mqtt)
    topic = mqtt_topic(settings.mqtt.topic_root, settings.gateway.tenant, gateway, "gateway", gateway, "status")
    try:
        client.connect(settings.mqtt.host, settings.mqtt.port)
        client.loop_start()
        deadline, seq = time.monotonic() + timeout_s, 0
        while time.monotonic() < deadline:
            pipeline.check_alive()
            status = DeviceStatus(event_id=make_event_id(gateway, "status", seq), tenant=settings.gateway.tenant,
                                  gateway_id=gateway, device_id=gateway, seq=seq, captured_at=datetime.now(UTC),
                                  state=DeviceState.HEARTBEAT, detail="demo readiness probe")
            client.publish(topic, to_json(status), qos=1)
            seq += 1
            time.sleep(1.0)
            if metric_value(bridge.metrics_url, "citystream_bridge_acked_total") > 0:  # acked once Kafka has it
                return
        raise RuntimeError(f"no message went MQTT -> bridge -> Kafka within {timeout_s:.0f}s")
    finally:
        client.loop_stop()
        client.disconnect()
        provision.revoke(settings, settings.gateway.tenant, gateway)


def sink_ready(settings: Settings) -> bool:
    """Whether the sink owns the store and answers read-only queries."""
    path = chdb_path(settings.clickhouse.dsn)
    if path is not None and read_owner(path) is None:
        return False
    try:
        query_rows(settings, f"SELECT count() AS n FROM {schema.view_of(schema.SENSOR_READINGS)} LIMIT 1")
    except StoreError:
        return False
    return True


def _stored(settings: Settings, run: str, since: datetime) -> dict[str, Any]:
    where = f"gateway_id LIKE '{run}-gw-%'"
    readings = query_rows(settings, f"""
        SELECT count() AS rows, uniqExact(event_id) AS ids,
               quantileExact(0.5)(dateDiff('millisecond', captured_at, ingested_at)) / 1000 AS p50,
               quantileExact(0.99)(dateDiff('millisecond', captured_at, ingested_at)) / 1000 AS p99
        FROM {schema.view_of(schema.SENSOR_READINGS)} WHERE {where}""")[0]
    # every dead letter since the run started (bridge, worker or sink): demo traffic is all valid
    dlq = query_rows(settings, f"SELECT count() AS n FROM {schema.view_of(schema.DEAD_LETTERS)} WHERE first_seen_at "
                               f">= toDateTime64('{since:%Y-%m-%d %H:%M:%S}', 3, 'UTC')")[0]["n"]
    plates = query_rows(settings, f"SELECT count() AS n FROM {schema.view_of(schema.PLATE_READS)} WHERE {where}")
    alerts = query_rows(settings, f"SELECT count() AS n FROM {schema.view_of(schema.ALERTS)} WHERE {where}")
    return {"rows": readings["rows"], "ids": readings["ids"], "p50": readings["p50"], "p99": readings["p99"],
            "dlq": dlq, "plate_reads": plates[0]["n"], "alerts": alerts[0]["n"]}


@dataclass(frozen=True)
class Plan:
    """What the demo simulates."""

    duration_s: float
    gateways: int
    cameras: int
    sensors: int
    rate_hz: float
    worker: bool = True


def run_demo(settings: Settings, config: Path, plan: Plan, echo: Callable[[str], None]) -> dict[str, Any]:
    """Run the pipeline once and return the verdict document."""
    from citystream.ingest.gateway.simulator import simulate

    st = local.status(settings)
    if not (st["mqtt"]["running"] and st["kafka"]["running"]):
        raise RuntimeError("the local stack is not running: run 'citystream stack up' (or 'make demo')")
    run = f"{time.strftime('%m%d%H%M%S')}{uuid.uuid4().hex[:4]}"
    started = datetime.now(UTC).replace(microsecond=0)
    pipeline = Pipeline()
    home = settings.stack.home.resolve()
    stages = ["sink", "bridge", *(["worker"] if plan.worker else [])]
    for name in stages:
        stage = pipeline.start(name, config, home)
        echo(f"started {name}: log {stage.log}, metrics {stage.metrics_url}")
    try:
        echo("waiting for the stages to be ready")
        _wait(lambda: sink_ready(settings), 120, "the sink's query path", pipeline)
        worker_url = next((st.metrics_url for st in pipeline.stages if st.name == "worker"), None)
        if worker_url:  # partitions assigned, tables recovered: frames from now on are read
            _wait(lambda: metric_value(worker_url, "citystream_worker_ready") == 1, 180, "the worker", pipeline)
        probe_bridge(settings, pipeline, 120)
        echo(f"simulating {plan.gateways} gateways x ({plan.cameras} cameras + {plan.sensors} sensors) "
             f"for {plan.duration_s:.0f}s (run {run})")
        stats = simulate(settings, gateways=plan.gateways, cameras=plan.cameras, sensors=plan.sensors,
                         rate=plan.rate_hz, duration=plan.duration_s, prefix=run)
        published = int(stats.published.get("reading", 0))
        echo(f"published {published} readings, {stats.published.get('frame', 0)} frames; waiting for the sink")
        deadline = time.monotonic() + 120
        stored = _stored(settings, run, started)
        while stored["ids"] < published and time.monotonic() < deadline:
            pipeline.check_alive()
            time.sleep(1.0)
            stored = _stored(settings, run, started)
        if plan.worker:  # the worker trails the readings: wait until its plate reads stop growing
            previous, steady = -1, 0
            while steady < 3 and time.monotonic() < deadline:
                pipeline.check_alive()
                time.sleep(1.0)
                stored = _stored(settings, run, started)
                steady = steady + 1 if stored["plate_reads"] == previous else 0
                previous = stored["plate_reads"]
    finally:
        codes = pipeline.stop()
    return {
        "run": run, "published": published, "stored": int(stored["ids"]),
        "lost": max(0, published - int(stored["ids"])), "duplicates": int(stored["rows"]) - int(stored["ids"]),
        "dlq": int(stored["dlq"]), "e2e_latency_p50_s": float(stored["p50"] or 0.0),
        "e2e_latency_p99_s": float(stored["p99"] or 0.0), "frames_published": int(stats.published.get("frame", 0)),
        "plate_reads": int(stored["plate_reads"]), "alerts": int(stored["alerts"]), "stage_exit_codes": codes,
    }


@click.command("demo")
@click.option("--duration", type=click.FloatRange(min=5), default=60.0, show_default=True, help="Seconds of traffic.")
@click.option("--gateways", type=click.IntRange(min=1), default=2, show_default=True)
@click.option("--cameras", type=click.IntRange(min=0), default=1, show_default=True, help="Cameras per gateway.")
@click.option("--sensors", type=click.IntRange(min=0), default=4, show_default=True, help="Sensors per gateway.")
@click.option("--rate", type=click.FloatRange(min=0.1), default=2.0, show_default=True,
              help="Readings per second per sensor.")
@click.option("--worker/--no-worker", default=True, show_default=True,
              help="Run the Faust worker (plates, faces, alerts); without it only raw streams are stored.")
@click.option("--json", "as_json", is_flag=True, help="Last stdout line is the verdict as JSON.")
@config_option
@click.pass_context
def demo(ctx: click.Context, duration: float, gateways: int, cameras: int, sensors: int, rate: float,
         worker: bool, as_json: bool, config: str | None) -> None:
    """Run gateways -> MQTT -> bridge -> Kafka -> worker -> sink -> ClickHouse and check nothing was lost."""
    settings = settings_of(ctx)
    path = config_path(config or ctx.find_root().params.get("config"))
    if path is None:
        fail("no settings file: run 'citystream stack up' first (it writes .citystream/citystream.yaml)", 2)
    plan = Plan(duration, gateways, cameras, sensors, rate, worker)

    def echo(message: str) -> None:
        click.echo(message, err=as_json)

    try:
        result = run_demo(settings, path.resolve(), plan, echo)
    except RuntimeError as exc:
        fail(str(exc))
    ok = result["lost"] == result["duplicates"] == result["dlq"] == 0 and all(
        c == 0 for c in result["stage_exit_codes"].values())
    summary = (f"published {result['published']}  stored {result['stored']}  lost {result['lost']}  "
               f"duplicates {result['duplicates']}  dlq {result['dlq']}  plate reads {result['plate_reads']}  "
               f"alerts {result['alerts']}  e2e p50 {result['e2e_latency_p50_s']:.3f}s "
               f"p99 {result['e2e_latency_p99_s']:.3f}s  stages {result['stage_exit_codes']}")
    echo(("OK  " if ok else "FAILED  ") + summary)
    if console_line(settings):  # make demo started the console: its URL and the demo login come last
        echo(console_line(settings))
    if as_json:
        print_json(result)
    if not ok:
        sys.exit(1)


