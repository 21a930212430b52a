"""MQTT sides of the benchmark: a QoS 1 publisher in its own process and a counting paho subscriber.

The publisher keeps at most ``window`` messages in flight (paho's in-flight and queue bounds, backing
off on ``MQTT_ERR_QUEUE_SIZE``), optionally paced to a fixed rate, and reports when it started and
when the broker had acknowledged everything. It runs in a spawned process so its GIL is its own.
"""

from __future__ import annotations

import multiprocessing
import threading
import time
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from citystream.bench import messages


@dataclass(frozen=True)
class PubJob:
    """What one publisher process sends."""

    host: str
    port: int
    username: str
    password: str
    root: str
    gateway: str
    device: str
    stream: str  # "reading" or "frame"
    count: int
    rate: float = 0.0  # messages/s; 0 = as fast as the window allows
    window: int = 100
    seq_start: int = 0


def _client(client_id: str, username: str, password: str) -> mqtt.Client:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    client.username_pw_set(username, password)
    return client


def _connect(client: mqtt.Client, host: str, port: int, timeout_s: float = 10.0) -> None:
    connected = threading.Event()
    client.on_connect = lambda c, u, f, reason, p: connected.set() if not reason.is_failure else None
    client.connect(host, port, keepalive=30)
    client.loop_start()
    if not connected.wait(timeout_s):
        client.loop_stop()
        raise RuntimeError(f"MQTT connect to {host}:{port} as {client._username!r} failed")


def publish(job: PubJob) -> dict[str, Any]:
    """Publish the job's messages with QoS 1; returns start time, end time (all acked) and counts."""
    client = _client(f"bench-pub-{job.gateway}-{job.seq_start}", job.username, job.password)
    client.max_inflight_messages_set(job.window)
    client.max_queued_messages_set(job.window)
    acked = [0]
    client.on_publish = lambda c, u, mid, reason, p: acked.__setitem__(0, acked[0] + 1)
    _connect(client, job.host, job.port)
    jpeg, width, height = messages.padded_jpeg() if job.stream == "frame" else (b"", 0, 0)
    topic = (messages.frame_topic if job.stream == "frame" else messages.reading_topic)(job.root, job.gateway,
                                                                                         job.device)
    retries = 0
    started = time.time()
    for i in range(job.count):
        if job.rate > 0:
            ahead = started + i / job.rate - time.time()
            if ahead > 0:
                time.sleep(ahead)
        seq = job.seq_start + i
        props = None
        if job.stream == "frame":
            payload = jpeg
            props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            props.UserProperty = messages.frame_props(job.gateway, job.device, seq, len(jpeg), width, height)
        else:
            payload = messages.reading(job.gateway, job.device, seq)
        while True:
            info = client.publish(topic, payload, qos=1, properties=props)
            if info.rc == MQTTErrorCode.MQTT_ERR_QUEUE_SIZE:
                retries += 1
                time.sleep(0.0002)
                continue
            if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                raise RuntimeError(f"publish failed: {mqtt.error_string(info.rc)}")
            break
    deadline = time.monotonic() + 60
    while acked[0] < job.count and time.monotonic() < deadline:
        time.sleep(0.001)
    finished = time.time()
    client.disconnect()
    client.loop_stop()
    return {"started": started, "finished": finished, "acked": acked[0], "count": job.count,
            "queue_full_retries": retries}


def _child(job: PubJob, out: Any) -> None:
    try:
        out.put(publish(job))
    except Exception as exc:
        out.put({"error": f"{type(exc).__name__}: {exc}"})


class PublisherProcess:
    """A publisher job running in a spawned process."""

    def __init__(self, job: PubJob) -> None:
        """Start the process; it connects and publishes at once."""
        ctx = multiprocessing.get_context("spawn")
        self.queue = ctx.Queue()
        self.process = ctx.Process(target=_child, args=(job, self.queue), daemon=True)
        self.process.start()

    def result(self, timeout_s: float) -> dict[str, Any]:
        """Wait for the publisher's report; raises when it failed or took too long."""
        try:
            res: dict[str, Any] = self.queue.get(timeout=timeout_s)
        except Exception as exc:
            self.process.kill()
            raise TimeoutError(f"publisher did not finish within {timeout_s:.0f} s") from exc
        self.process.join(5)
        if "error" in res:
            raise RuntimeError(f"publisher: {res['error']}")
        return res


class Counter:
    """A QoS 1 paho subscriber counting messages under a topic root (the raw MQTT ceiling's receiver)."""

    def __init__(self, host: str, port: int, username: str, password: str, root: str, expected: int) -> None:
        """Connect and subscribe to ``root/#`` with QoS 1."""
        self.expected = expected
        self.count = 0
        self.last = 0.0
        self.done = threading.Event()
        subscribed = threading.Event()
        self.client = _client(f"bench-sub-{root}", username, password)
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda c, u, mid, codes, p: subscribed.set()
        _connect(self.client, host, port)
        self.client.subscribe(f"{root}/#", options=SubscribeOptions(qos=1))
        if not subscribed.wait(10):
            raise RuntimeError("MQTT subscribe not acknowledged")

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        self.count += 1
        self.last = time.time()
        if self.count >= self.expected:
            self.done.set()

    def close(self) -> None:
        """Disconnect."""
        self.client.disconnect()
        self.client.loop_stop()
