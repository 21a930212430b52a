"""Ingest benchmarks: raw MQTT QoS 1 ceiling, the bridge for the same payloads, bridge replicas, e2e latency.

- Ceiling: publisher process -> Mosquitto -> paho subscriber (QoS 1 both ways), counted in this process.
- Bridge: the same publisher -> Mosquitto -> ``citystream bridge`` process(es) -> Kafka, counted by a
  consumer reading the Kafka topic; every sequence number must arrive (zero loss) or it is reported.
- End to end: publisher paced at a fraction of the measured bridge capacity -> bridge -> Kafka ->
  ``citystream sink`` -> ClickHouse; latency = ``ingested_at - captured_at`` of each stored row.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from citystream import clickhouse
from citystream.bench import messages
from citystream.bench.common import Entry, Procs, entry, isolated, tag, wait_until
from citystream.bench.kafka_io import Arrivals
from citystream.bench.mqtt_io import Counter, PubJob, PublisherProcess
from citystream.ingest import provision
from citystream.schemas.topics import RAW_FRAMES, RAW_READINGS
from citystream.settings import Settings
from citystream.stack.kafka import ensure_topics

WINDOW = 100
STREAM_TOPIC = {"reading": RAW_READINGS, "frame": RAW_FRAMES}


def _login(s: Settings, gateway: str) -> dict[str, str]:
    """A provisioned identity of the bench tenant's ``gateway`` on the local stack (rotated if it exists)."""
    cred: dict[str, str] = provision.provision(s, messages.TENANT, gateway, rotate=True)
    return cred


def _job(s: Settings, stream: str, count: int, gateway: str, rate: float = 0.0, seq_start: int = 0) -> PubJob:
    cred = _login(s, gateway)
    return PubJob(host=s.mqtt.host, port=s.mqtt.port, username=cred["username"],
                  password=cred["password"], root=s.mqtt.topic_root, gateway=gateway,
                  device=f"{gateway}-dev", stream=stream, count=count, rate=rate, window=WINDOW, seq_start=seq_start)


def _payload_bytes(stream: str) -> int:
    return messages.FRAME_BYTES if stream == "frame" else len(messages.reading("gw", "gw-dev", 0))


def mqtt_ceiling(config: Path, stream: str, count: int) -> Entry:
    """Raw QoS 1 messages/s through Mosquitto (publisher process -> broker -> paho subscriber)."""
    s = isolated(config, tag())
    counter = Counter(s.mqtt.host, s.mqtt.port, s.mqtt.username, s.mqtt.password.get_secret_value(),
                      s.mqtt.topic_root, count)
    try:
        res = PublisherProcess(_job(s, stream, count, "raw")).result(300)
        counter.done.wait(60)
    finally:
        counter.close()
    if counter.count < count:
        raise RuntimeError(f"raw subscriber got {counter.count} of {count} messages")
    rate = count / (counter.last - res["started"])
    size = _payload_bytes(stream)
    return entry(rate, "msg/s", None, messages=count, payload_bytes=size, mb_per_s=round(rate * size / 1e6, 2),
                 window=WINDOW)


class Probe:
    """Publishes single readings from the ``probe`` gateway until the pipeline shows one."""

    def __init__(self, s: Settings, stream: str = "reading") -> None:
        """Connect as the provisioned ``probe`` gateway; probes are messages of ``stream`` (reading or frame)."""
        self.s = s
        self.stream = stream
        self.jpeg = messages.padded_jpeg(4096, 64, 36)[0] if stream == "frame" else b""
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-probe-{s.mqtt.topic_root}",
                                  protocol=mqtt.MQTTv5)
        cred = _login(s, "probe")
        self.client.username_pw_set(cred["username"], cred["password"])
        self.client.connect(s.mqtt.host, s.mqtt.port, 30)
        self.client.loop_start()
        self.seq = 0

    def send(self) -> None:
        """One probe message."""
        root = self.s.mqtt.topic_root
        if self.stream == "frame":
            props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            props.UserProperty = messages.frame_props("probe", "probe", self.seq, len(self.jpeg), 64, 36)
            self.client.publish(messages.frame_topic(root, "probe", "probe"), self.jpeg, qos=1, properties=props)
        else:
            self.client.publish(messages.reading_topic(root, "probe", "probe"), messages.reading(
                "probe", "probe", self.seq), qos=1)
        self.seq += 1

    def until(self, seen: Callable[[], bool], timeout_s: float, check: Callable[[], None] | None = None) -> None:
        """Send a probe every 0.5 s until ``seen()``."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.send()
            try:
                wait_until(seen, 0.5, "probe", 0.05)
                return
            except TimeoutError:
                if check is not None:
                    check()
        raise TimeoutError(f"no probe message came through within {timeout_s:.0f} s")

    def close(self) -> None:
        """Disconnect."""
        self.client.disconnect()
        self.client.loop_stop()


def start_bridges(procs: Procs, s: Settings, name: str, replicas: int) -> list[Any]:
    """Start ``replicas`` bridge processes and wait until each has subscribed."""
    bridges = []
    for i in range(replicas):
        rs = s.model_copy(update={"bridge": s.bridge.model_copy(update={"client_id": f"{name}-r{i}"}),
                                  "log": s.log.model_copy(update={"level": "INFO"})})
        bridges.append((f"{name}-bridge{i}", procs.start(f"{name}-bridge{i}", rs, "bridge")))
    for log_name, proc in bridges:
        _wait_subscribed(procs, log_name, proc)
    return [p for _, p in bridges]


def _wait_subscribed(procs: Procs, log_name: str, proc: Any) -> None:
    log = procs.workdir / f"{log_name}.log"
    wait_until(lambda: "mqtt connected" in log.read_text(errors="replace"), 60, f"{log_name} start",
               check=lambda: procs.check(proc))


def bridge_run(config: Path, procs: Procs, stream: str, count: int, replicas: int = 1,
               publishers: int = 1) -> dict[str, Any]:
    """Messages/s from first publish to last record in Kafka, with the loss and duplicate counts."""
    name = tag()
    s = isolated(config, name)
    ensure_topics(s)
    arrivals = Arrivals(s, s.kafka.topic(STREAM_TOPIC[stream]))
    arrivals.start()
    bridges = start_bridges(procs, s, name, replicas)
    probe = Probe(s, stream)
    try:
        probe.until(lambda: arrivals.distinct("probe") > 0, 60, lambda: _check_all(procs, bridges))
        share = count // publishers
        pubs = [PublisherProcess(_job(s, stream, share, f"gw{i}")) for i in range(publishers)]
        results = [p.result(300) for p in pubs]
        keys = [f"gw{i}-dev" for i in range(publishers)]
        try:
            wait_until(lambda: all(arrivals.distinct(k) >= share for k in keys), 60, "bridge delivery", 0.05)
        except TimeoutError:
            pass
    finally:
        probe.close()
        codes = [procs.stop(b) for b in bridges]
        arrivals.stop()
    got = sum(arrivals.distinct(k) for k in keys)
    records = sum(arrivals.records.get(k, 0) for k in keys)
    if got == 0:
        raise RuntimeError(f"nothing arrived in Kafka; bridge log: {procs.tail(name + '-bridge0')}")
    started = min(r["started"] for r in results)
    last = max(arrivals.last[k] for k in keys if k in arrivals.last)
    return {"rate": got / (last - started), "sent": share * publishers, "delivered": got,
            "lost": share * publishers - got, "duplicates": records - got, "exit_codes": codes}


def bridge_stage(config: Path, procs: Procs, stream: str, count: int, ceiling: float | None) -> Entry:
    """The bridge's messages/s against the raw MQTT ceiling for the same payload."""
    run = bridge_run(config, procs, stream, count)
    size = _payload_bytes(stream)
    return entry(run["rate"], "msg/s", ceiling, payload_bytes=size, mb_per_s=round(run["rate"] * size / 1e6, 2),
                 sent=run["sent"], delivered=run["delivered"], lost=run["lost"], duplicates=run["duplicates"],
                 zero_loss=run["lost"] == 0, bridge_exit_codes=run["exit_codes"])


def bridge_scaling(config: Path, procs: Procs, count: int) -> Entry:
    """Small-message rate with 2 bridge replicas (one shared subscription) over 1; two publishers each."""
    one = bridge_run(config, procs, "reading", count, replicas=1, publishers=2)
    two = bridge_run(config, procs, "reading", count, replicas=2, publishers=2)
    speedup = two["rate"] / one["rate"]
    return entry(speedup, "x", 2.0, one_replica_msg_s=round(one["rate"], 1), two_replicas_msg_s=round(two["rate"], 1),
                 lost=one["lost"] + two["lost"], publishers=2)


def _check_all(procs: Procs, started: list[Any]) -> None:
    for proc in started:
        procs.check(proc)


def _wait_stored(procs: Procs, sink: Any, s: Settings, gateway: str, count: int) -> None:
    wait_until(lambda: _stored(s, gateway) >= count, 60, f"e2e rows of {gateway} stored", 0.25,
               check=lambda: procs.check(sink))


def _stored(s: Settings, gateway: str) -> int:
    rows = clickhouse.query_rows(s, f"SELECT count() AS n FROM sensor_readings WHERE gateway_id = '{gateway}'")
    return int(rows[0]["n"])


def e2e_latency(config: Path, procs: Procs, workdir: Path, capacity: float, seconds: float) -> dict[str, Entry]:
    """p50/p95/p99 of publish -> stored in ClickHouse at 25/50/75 % of the measured bridge capacity."""
    name = tag()
    s = isolated(config, name, **{"clickhouse.dsn": f"chdb://{workdir / (name + '-ch')}",
                                  "clickhouse.database": "bench", "sink.query_port": 0,
                                  "sink.frames_dir": str(workdir / (name + "-frames"))})
    ensure_topics(s)
    path = clickhouse.chdb_path(s.clickhouse.dsn)
    assert path is not None
    sink = procs.start(f"{name}-sink", s, "sink")
    out: dict[str, Entry] = {}
    try:
        wait_until(lambda: clickhouse.read_owner(path) is not None, 90, "sink start", 0.2,
                   check=lambda: procs.check(sink))
        bridge = start_bridges(procs, s, name, 1)[0]
        probe = Probe(s)
        try:
            probe.until(lambda: _stored(s, "probe") > 0, 60, lambda: _check_all(procs, [sink, bridge]))
        finally:
            probe.close()
        for pct in (25, 50, 75):
            rate = capacity * pct / 100
            count = max(10, int(rate * seconds))
            gateway = f"e2e{pct}"
            res = PublisherProcess(_job(s, "reading", count, gateway, rate=rate)).result(seconds * 4 + 60)
            _wait_stored(procs, sink, s, gateway, count)
            row = clickhouse.query_rows(s, "SELECT count() AS n, quantilesExact(0.5, 0.95, 0.99)("
                                           "toUnixTimestamp64Milli(ingested_at) - toUnixTimestamp64Milli(captured_at))"
                                           f" AS q FROM sensor_readings WHERE gateway_id = '{gateway}'")[0]
            achieved = count / max(res["finished"] - res["started"], 1e-9)
            for label, q in zip(("p50", "p95", "p99"), row["q"], strict=True):
                target = {"target_s": 2.0} if pct == 50 and label == "p99" else {}
                out[f"e2e_{label}_s_at_{pct}pct"] = entry(q / 1000, "s", None, offered_msg_s=round(rate, 1),
                                                          achieved_msg_s=round(achieved, 1), rows=int(row["n"]),
                                                          **target)
    finally:
        for _n, proc in list(procs.procs):
            procs.stop(proc)
    return out
