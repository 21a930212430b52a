"""Worker head-of-line figures: alert latency idle vs behind a frame backlog, and the pause of a rebalance.

``alert_p99_s_idle`` / ``alert_p99_s_frame_backlog``: a sensor's window over the PM2.5 threshold is
closed by the next reading; from producing that reading to ``raw.readings`` until its alert is read
from the ``alerts`` topic, for ``samples`` sensors one after the other, first with the worker idle,
then with a frame backlog that keeps its vision process busy for the whole measurement (the entry says
how many frames were still waiting at the end). Goal: backlog within 2x of idle.
``rebalance_pause_s``: the longest time a running worker's processed count (frames + readings) stood
still while a second worker joined and left under load (:mod:`citystream.bench.worker_loop`). Goal: < 5 s.
"""

from __future__ import annotations

import threading
import time
import uuid
from datetime import timedelta
from pathlib import Path

import orjson
from confluent_kafka import OFFSET_END, Consumer, TopicPartition

from citystream.bench import messages
from citystream.bench.common import Entry, Procs, entry, tag
from citystream.bench.worker_io import GATEWAY, T0, Feed, Worker, plate_jpegs
from citystream.bench.worker_loop import loop_settings, rebalance_loop
from citystream.ingest.bridge.validate import fast_event_id
from citystream.schemas.topics import ALERTS, RAW_READINGS
from citystream.settings import Settings

#: (alert samples, frames in the backlog, rebalance cycles) per bench scale.
SIZES = {"tiny": (5, 40, 1), "quick": (20, 120, 2), "full": (40, 240, 3)}


class AlertClock(threading.Thread):
    """Reads the alerts topic from its end; remembers when each alert (by source reading id) arrived."""

    def __init__(self, s: Settings) -> None:
        """Assign every alerts partition at its end (call ``start()``)."""
        super().__init__(daemon=True)
        name = s.kafka.topic(ALERTS)
        self.consumer = Consumer({**s.kafka.client_config(), "group.id": f"bench-{uuid.uuid4().hex[:8]}",
                                  "enable.auto.commit": False})
        parts = self.consumer.list_topics(name, timeout=10).topics[name].partitions
        self.consumer.assign([TopicPartition(name, p, OFFSET_END) for p in parts])
        self.arrived: dict[str, float] = {}
        self.stopping = threading.Event()

    def run(self) -> None:
        """Consume until stopped."""
        try:
            while not self.stopping.is_set():
                for msg in self.consumer.consume(100, 0.05):
                    if msg.error() is None:
                        self.arrived.setdefault(orjson.loads(msg.value())["source_event_id"], time.time())
        finally:
            self.consumer.close()

    def stop(self) -> None:
        """Stop and close."""
        self.stopping.set()
        self.join(10)


def _reading(device: str, seq: int, minute: int, value: float) -> bytes:
    at = (T0 + timedelta(minutes=minute, seconds=5)).isoformat().replace("+00:00", "Z")
    return orjson.dumps({"event_id": fast_event_id(GATEWAY, "reading", seq), "schema_version": 1,
                         "tenant": messages.TENANT, "gateway_id": GATEWAY, "device_id": device, "seq": seq,
                         "captured_at": at, "district": "", "kind": "sensor_reading", "metric": "pm25_ug_m3",
                         "value": value})


def alert_latencies(feed: Feed, clock: AlertClock, samples: int, name: str) -> list[float]:
    """Seconds from producing each window-closing reading to its alert, for ``samples`` new sensors."""
    topic = feed.s.kafka.topic(RAW_READINGS)
    sent: dict[str, float] = {}
    for i in range(samples):
        device = f"{name}-{i}"
        feed.seq += 1
        feed.producer.produce(topic, _reading(device, feed.seq, 0, 60.0), device.encode())
        feed.seq += 1
        closing = fast_event_id(GATEWAY, "reading", feed.seq)
        sent[closing] = time.time()
        feed.producer.produce(topic, _reading(device, feed.seq, 1, 60.0), device.encode())
        feed.producer.flush(10)
        deadline = time.monotonic() + 180
        while closing not in clock.arrived and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.2)
    missing = [k for k in sent if k not in clock.arrived]
    if missing:
        raise RuntimeError(f"{len(missing)} of {samples} alerts did not arrive")
    return [clock.arrived[k] - t for k, t in sent.items()]  # in the order they were measured


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def alert_latency(config: Path, procs: Procs, scale: str) -> dict[str, Entry]:
    """``alert_p99_s_idle`` and ``alert_p99_s_frame_backlog`` on one worker (one vision process)."""
    samples, frames, _ = SIZES[scale]
    s = loop_settings(config, tag())
    worker = Worker(procs, s, "latency-worker", "bench-latency")
    feed = Feed(s, plate_jpegs(8, 3))
    clock = AlertClock(s)
    clock.start()
    try:
        worker.start()
        if not worker.wait_ready(180):
            raise RuntimeError(f"worker not ready: {procs.tail(worker.name)}")
        alert_latencies(feed, clock, 2, "warm")  # the first alerts include the table's first writes
        idle = alert_latencies(feed, clock, samples, "idle")
        for _ in range(frames):
            feed.frame()
        feed.flush()
        busy = alert_latencies(feed, clock, samples, "busy")
        analysed = worker.metric("citystream_worker_frames_total") or 0.0
    finally:
        clock.stop()
    if analysed >= frames:
        raise RuntimeError(f"the frame backlog ({frames}) was finished during the measurement; raise it")
    p_idle, p_busy = _p(idle, 0.99), _p(busy, 0.99)
    common = {"samples": samples, "measured": "window-closing reading produced -> alert read from Kafka"}
    return {"alert_p99_s_idle": entry(p_idle, "s", None, p50=round(_p(idle, 0.5), 4),
                                      samples_s=[round(x, 4) for x in idle], **common),
            "alert_p99_s_frame_backlog": entry(p_busy, "s", None, p50=round(_p(busy, 0.5), 4),
                                               samples_s=[round(x, 4) for x in busy],
                                               first_sample_s=round(busy[0], 4),
                                               p99_after_first_s=round(_p(busy[1:], 0.99), 4),
                                               ratio_to_idle=round(p_busy / p_idle, 2) if p_idle else None,
                                               target_ratio=2.0, backlog_frames=frames,
                                               frames_waiting_at_end=int(frames - analysed), **common)}


def rebalance_pause(config: Path, procs: Procs, scale: str) -> dict[str, Entry]:
    """``rebalance_pause_s``: the first worker's longest standstill while a second joins and leaves."""
    cycles = SIZES[scale][2]
    t = rebalance_loop(config, procs, cycles)
    if t.ok != cycles:
        raise RuntimeError(f"rebalance runs not all ok: {t.failures[:3]}")
    return {"rebalance_pause_s": entry(float(t.extra["pause_s_max"]), "s", None, target=5.0, cycles=cycles,
                                       pauses_s=t.extra["pauses_s"],
                                       measured="longest interval without a change of the running worker's "
                                                "frames + readings counters, second worker joining and leaving")}
