"""Messages for the bridge tests: valid readings/frames/statuses, the malformed corpus, MQTT/Kafka I/O.

``corpus()`` yields at least 200 malformed messages, each tagged with the DLQ reason the bridge must
give it, covering every reason in ``citystream.ingest.bridge.validate.REASONS``.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections import Counter as CountOf
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as mqtt
from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, TopicPartition
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from citystream.ingest.bridge.validate import REASONS
from citystream.schemas.events import FrameMeta, make_event_id
from citystream.schemas.topics import mqtt_topic
from citystream.schemas.wire import frame_meta_pairs
from citystream.settings import Settings

TENANT = "nakhon-rangsit"
GATEWAY = "gw-test-1"


@dataclass
class Msg:
    """One MQTT message to publish; ``reason`` is the expected DLQ reason (None = valid)."""

    topic: str
    payload: bytes
    props: list[tuple[str, str]] = field(default_factory=list)
    reason: str | None = None
    event_id: str = ""


def now_iso(delta_s: float = 0.0) -> str:
    """UTC ISO timestamp ``delta_s`` from now."""
    return (datetime.now(UTC) + timedelta(seconds=delta_s)).isoformat(timespec="milliseconds")


def reading_doc(seq: int, device: str = "pm-1", gateway: str = GATEWAY, tenant: str = TENANT,
                value: Any = 12.5) -> dict[str, Any]:
    """A valid SensorReading as a dict."""
    return {"event_id": make_event_id(gateway, "reading", seq), "tenant": tenant, "gateway_id": gateway,
            "device_id": device, "seq": seq, "captured_at": now_iso(), "district": "บางเขน",
            "kind": "sensor_reading", "metric": "pm25_ug_m3", "value": value}


def reading(root: str, seq: int, device: str = "pm-1", gateway: str = GATEWAY, **changes: Any) -> Msg:
    """A valid reading message (``changes`` edit the JSON document)."""
    doc = {**reading_doc(seq, device, gateway), **changes}
    return Msg(mqtt_topic(root, TENANT, gateway, "sensor", device, "reading"), orjson.dumps(doc),
               event_id=str(doc["event_id"]))


def status(root: str, seq: int, gateway: str = GATEWAY, state: str = "heartbeat") -> Msg:
    """A valid gateway status message."""
    doc = {"event_id": make_event_id(gateway, "status", seq), "tenant": TENANT, "gateway_id": gateway,
           "device_id": gateway, "seq": seq, "captured_at": now_iso(), "kind": "device_status", "state": state}
    return Msg(mqtt_topic(root, TENANT, gateway, "gateway", gateway, "status"), orjson.dumps(doc),
               event_id=str(doc["event_id"]))


def jpeg(width: int = 32, height: int = 24, shade: int = 90) -> bytes:
    """A small real JPEG."""
    out = io.BytesIO()
    Image.new("RGB", (width, height), (shade, 120, 200)).save(out, format="JPEG", quality=80)
    return out.getvalue()


def frame(root: str, seq: int, /, body: bytes | None = None, camera: str = "cam-1", size: tuple[int, int] = (32, 24),
          extra_props: list[tuple[str, str]] | None = None, **meta_changes: Any) -> Msg:
    """A valid frame message: JPEG body, FrameMeta as user properties (``extra_props`` are appended as given)."""
    body = jpeg(*size) if body is None else body
    meta = FrameMeta(event_id=make_event_id(GATEWAY, "frame", seq), tenant=TENANT, gateway_id=GATEWAY,
                     device_id=camera, seq=seq, captured_at=datetime.now(UTC), width=size[0], height=size[1],
                     jpeg_bytes=len(body), motion_score=0.25)
    pairs = dict(frame_meta_pairs(meta))
    pairs.update({k: str(v) for k, v in meta_changes.items()})
    props = [(k, v) for k, v in pairs.items() if v != "<drop>"] + list(extra_props or [])
    return Msg(mqtt_topic(root, TENANT, GATEWAY, "camera", camera, "frame"), body, props, event_id=meta.event_id)


def progressive_jpeg(width: int = 32, height: int = 24) -> bytes:
    """A small real progressive JPEG (several scans)."""
    out = io.BytesIO()
    Image.new("RGB", (width, height), (90, 120, 200)).save(out, format="JPEG", quality=80, progressive=True)
    return out.getvalue()


def _markers(data: bytes, marker: int) -> list[int]:
    """Offsets of a marker in the header/scan structure (a plain byte search; fine for our small test JPEGs)."""
    found, at = [], data.find(bytes([0xFF, marker]))
    while at >= 0:
        found.append(at)
        at = data.find(bytes([0xFF, marker]), at + 2)
    return found


def with_sof_size(data: bytes, width: int, height: int) -> bytes:
    """The JPEG with its frame header (SOF0/SOF2) claiming another size."""
    at = min(_markers(data, 0xC0) + _markers(data, 0xC2))
    return data[:at + 5] + height.to_bytes(2, "big") + width.to_bytes(2, "big") + data[at + 9:]


def progressive_cut(data: bytes, scans_kept: int) -> bytes:
    """A progressive JPEG with only its first ``scans_kept`` scans, then EOI (scans cut short)."""
    return data[:_markers(data, 0xDA)[scans_kept]] + b"\xff\xd9"


def status_doc(seq: int, gateway: str = GATEWAY, **changes: Any) -> dict[str, Any]:
    """A valid DeviceStatus heartbeat as a dict."""
    return {"event_id": make_event_id(gateway, "status", seq), "tenant": TENANT, "gateway_id": gateway,
            "device_id": gateway, "seq": seq, "captured_at": now_iso(), "kind": "device_status", "state": "heartbeat",
            **changes}


def dumps(doc: dict[str, Any]) -> bytes:
    """Compact JSON like orjson's, but for integers of any size too."""
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()


def with_key(doc: dict[str, Any], key: str, raw_value: bytes) -> bytes:
    """The document's JSON with ``key`` repeated at the end (orjson and pydantic would keep this last value)."""
    return orjson.dumps(doc)[:-1] + b',"' + key.encode() + b'":' + raw_value + b"}"


def _variants(root: str, i: int, max_reading: int, max_frame: int) -> dict[str, list[Msg]]:
    """Several malformed messages per reason (``i`` varies device names and seq numbers)."""
    dev, seq = f"pm-{i}", 10_000 + i
    good = reading_doc(seq, dev)
    topic = mqtt_topic(root, TENANT, GATEWAY, "sensor", dev, "reading")

    def js(**changes: Any) -> bytes:
        return dumps({**good, **changes})

    without_seq = {k: v for k, v in good.items() if k != "seq"}
    status_topic = mqtt_topic(root, TENANT, GATEWAY, "gateway", GATEWAY, "status")
    sdoc = status_doc(seq)
    prog = progressive_jpeg()
    small = jpeg()
    return {
        "unknown_topic": [Msg(mqtt_topic(root, TENANT, GATEWAY, "sensor", dev, "frame"), js()),
                          Msg(mqtt_topic(root, TENANT, GATEWAY, "camera", dev, "reading"), js()),
                          Msg(f"{root}/{TENANT}//sensor/{dev}/reading", js()),
                          Msg(mqtt_topic(root, TENANT, GATEWAY, "toaster", dev, "status"), js())],
        "oversized": [Msg(topic, js(district="x" * 120) + b" " * max_reading),
                      frame(root, seq, b"\xff\xd8" + bytes(max_frame) + b"\xff\xd9")],
        "not_json": [Msg(topic, b"hello"), Msg(topic, b""), Msg(topic, js()[:-7]), Msg(topic, b"\xff\xfe\x00{"),
                     Msg(topic, b"{'single': 'quotes'}")],
        "non_finite": [Msg(topic, js().replace(b'"value":12.5', b'"value":' + tok))
                       for tok in (b"NaN", b"Infinity", b"-Infinity", b"1e999")]
        + [frame(root, seq, motion_score="NaN")],
        "duplicate_key": [Msg(topic, with_key(good, "metric", b'"pm10_ug_m3"')),
                          Msg(topic, with_key(good, "seq", b"%d" % seq)), Msg(topic, with_key(good, "value", b"12.5")),
                          Msg(topic, with_key({**good, "value": 5000}, "value", b"1")),
                          Msg(status_topic, with_key(sdoc, "state", b'"offline"'))],
        "out_of_range": [Msg(topic, js(value=5000)), Msg(topic, js(value=1.79e308)), Msg(topic, js(value=-0.5)),
                         Msg(topic, js(metric="humidity_pct", value=140)),
                         Msg(topic, js(metric="temperature_c", value=-90)),
                         Msg(topic, js(metric="noise_db_a", value=10**30))],
        "schema": [Msg(topic, orjson.dumps(without_seq)), Msg(topic, js(extra_field=1)), Msg(topic, js(metric="joy")),
                   Msg(topic, js(value="high")), Msg(topic, js(seq=-1)), Msg(topic, b"[1, 2, 3]"),
                   Msg(topic, js(captured_at="2026-01-01T00:00:00")), Msg(topic, b"42"),
                   # no coercion: the JSON Schema says number / RFC 3339 string / integer
                   Msg(topic, js(value=True)), Msg(topic, js(value="220.1")), Msg(topic, js(value=None)),
                   Msg(topic, js(captured_at=int(time.time() * 1000))), Msg(topic, js(seq=7.0)),
                   Msg(topic, js(seq="7")),
                   Msg(topic, js(metric=["pm25_ug_m3"])), Msg(topic, js(schema_version=True)),
                   # bounded integers
                   Msg(topic, js(seq=2**63)), Msg(topic, js(seq=2**64 - 1)),
                   Msg(topic, js()[:-1].replace(b'"seq":%d' % seq, b'"seq":18446744073709551616') + b"}"),
                   Msg(topic, js(schema_version=65_536)),
                   Msg(status_topic, dumps({**sdoc, "queue_depth": 2**32})),
                   Msg(status_topic, dumps({**sdoc, "fps": True})),
                   Msg(status_topic, dumps({**sdoc, "dropped": "3"})),
                   Msg(status_topic, dumps({**sdoc, "seq": 2**64}))],
        "bad_properties": [Msg(topic, js(), [("bridge_received_at", now_iso())]),
                           Msg(topic, js(), [("trace", "1"), ("trace", "2")]),
                           Msg(status_topic, orjson.dumps(sdoc), [("x", "1"), ("x", "1")])],
        "topic_mismatch": [Msg(topic, js(device_id="someone-else")), Msg(topic, js(tenant="other-city")),
                           Msg(topic, js(gateway_id="gw-other", event_id=make_event_id("gw-other", "reading", seq)))],
        "bad_event_id": [Msg(topic, js(event_id=str(uuid.uuid4()))),
                         Msg(topic, js(event_id=make_event_id(GATEWAY, "frame", seq)))],
        "clock_skew": [Msg(topic, js(captured_at=now_iso(-30 * 86400))), Msg(topic, js(captured_at=now_iso(9 * 86400))),
                       Msg(topic, js(captured_at="1970-01-01T00:00:00Z"))],
        "not_jpeg": [frame(root, seq, b"\x89PNG\r\n\x1a\n" + bytes(64)), frame(root, seq, jpeg()[:-2]),
                     frame(root, seq, b"not an image at all")],
        "bad_jpeg": [frame(root, seq, small + small), frame(root, seq, small + b"trailer\xff\xd9"),
                     frame(root, seq, small[:-2] + b"\x00\x00\xff\xd9\xff\xd9"),
                     frame(root, seq, progressive_cut(prog, 1)), frame(root, seq, progressive_cut(prog, 3)),
                     frame(root, seq, small[:2] + b"\xff\xd9"),
                     frame(root, seq, small[:2] + b"\xff\xe0\x7f\xff\xff\xd9"),
                     frame(root, seq, small[:min(_markers(small, 0xDA))] + b"\xff\xd9")],
        "frame_too_large": [frame(root, seq, with_sof_size(small, 8192, 8192), size=(8192, 8192)),
                            frame(root, seq, with_sof_size(prog, 4096, 4096), size=(4096, 4096))],
        "frame_size_mismatch": [frame(root, seq, small, width="64"), frame(root, seq, small, height="25"),
                                frame(root, seq, with_sof_size(small, 33, 24))],
        "bad_frame_meta": [frame(root, seq, width="0"), frame(root, seq, jpeg_bytes="7"),
                           frame(root, seq, height="tall"), frame(root, seq, event_id="<drop>"),
                           Msg(frame(root, seq).topic, jpeg()),
                           # repeated, conflicting and unknown user properties; no coercion of their values
                           frame(root, seq, extra_props=[("tenant", "other-city")]),
                           frame(root, seq, extra_props=[("tenant", TENANT)]),
                           frame(root, seq, extra_props=[("width", "32")]),
                           frame(root, seq, extra_props=[("camera_secret", "x")]),
                           frame(root, seq, extra_props=[("bridge_received_at", now_iso())]),
                           frame(root, seq, width="32.0"), frame(root, seq, width=" 32"),
                           frame(root, seq, keyframe="1"),
                           frame(root, seq, keyframe="True"), frame(root, seq, motion_score="1.5"),
                           frame(root, seq, motion_score="true"), frame(root, seq, **{"seq": str(2**64)}),
                           frame(root, seq, captured_at=str(int(time.time())))],
    }


def corpus(root: str, minimum: int = 200, max_reading: int = 16 * 1024, max_frame: int = 64 * 1024) -> list[Msg]:
    """At least ``minimum`` malformed messages covering every reason, each tagged with its reason."""
    out: list[Msg] = []
    i = 0
    while len(out) < minimum or i == 0:
        for reason, msgs in _variants(root, i, max_reading, max_frame).items():
            for m in msgs:
                m.reason = reason
                out.append(m)
        i += 1
    assert {m.reason for m in out} == set(REASONS)
    return out


# --- I/O -------------------------------------------------------------------------------------------
def gateway_client(settings: Settings, client_id: str = "", session_expiry_s: int = 300) -> mqtt.Client:
    """A connected MQTT v5 gateway-user client that retries: persistent session, paho resends unacked on reconnect."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id or f"test-gw-{uuid.uuid4().hex[:8]}",
                         protocol=mqtt.MQTTv5)
    client.username_pw_set(settings.gateway.username, settings.gateway.password.get_secret_value())
    client.max_inflight_messages_set(100)
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = session_expiry_s
    client.connect(settings.mqtt.host, settings.mqtt.port, 30, clean_start=False, properties=props)
    client.loop_start()
    return client


def publish(client: mqtt.Client, m: Msg) -> mqtt.MQTTMessageInfo:
    """Queue one QoS 1 publish (user properties included)."""
    props = None
    if m.props:
        props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        props.UserProperty = m.props
    return client.publish(m.topic, m.payload, qos=1, properties=props)


def wait_published(infos: Iterable[mqtt.MQTTMessageInfo], timeout_s: float = 60.0) -> None:
    """Wait until the broker acked every publish."""
    deadline = time.monotonic() + timeout_s
    for info in infos:
        info.wait_for_publish(max(0.1, deadline - time.monotonic()))
        assert info.is_published(), "broker did not ack a publish in time"


def publish_all(client: mqtt.Client, msgs: Iterable[Msg], timeout_s: float = 60.0) -> int:
    """Publish QoS 1 and wait until the broker acked every message; returns the count."""
    infos = [publish(client, m) for m in msgs]
    wait_published(infos, timeout_s)
    return len(infos)


class Stream:
    """Publishes ``count`` readings of one gateway at a steady pace from a thread (QoS 1, retrying client)."""

    def __init__(self, settings: Settings, count: int, per_tick: int = 20, tick_s: float = 0.05,
                 gateway: str = GATEWAY, devices: int = 5) -> None:
        """Prepare the messages; ``start`` begins publishing."""
        root = settings.mqtt.topic_root
        self.msgs = [reading(root, seq, device=f"pm-{seq % devices}", gateway=gateway) for seq in range(count)]
        self.client = gateway_client(settings)
        self.per_tick, self.tick_s = per_tick, tick_s
        self.sent = 0
        self.error: BaseException | None = None
        self._infos: list[mqtt.MQTTMessageInfo] = []
        self._thread = threading.Thread(target=self._run, daemon=True)

    @property
    def event_ids(self) -> set[str]:
        """Every event id this stream publishes."""
        return {m.event_id for m in self.msgs}

    def start(self) -> Stream:
        """Start publishing in the background."""
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            for i in range(0, len(self.msgs), self.per_tick):
                self._infos.extend(publish(self.client, m) for m in self.msgs[i:i + self.per_tick])
                self.sent = len(self._infos)
                time.sleep(self.tick_s)
        except BaseException as exc:  # surfaced by finish()
            self.error = exc

    def finish(self, timeout_s: float = 120.0) -> None:
        """Wait until everything was published and acked by the broker; then disconnect."""
        self._thread.join(timeout_s)
        assert not self._thread.is_alive() and self.error is None, self.error
        try:
            wait_published(self._infos, timeout_s)
        finally:
            self.client.loop_stop()
            self.client.disconnect()


def _assigned_consumer(settings: Settings, topic: str) -> Consumer:
    """A consumer reading every partition of ``topic`` from the beginning (no group coordination)."""
    consumer = Consumer({**settings.kafka.client_config(), "group.id": f"test-{uuid.uuid4().hex[:8]}",
                         "enable.auto.commit": False, "enable.partition.eof": False})
    deadline = time.monotonic() + 30
    parts: dict[int, Any] = {}
    while not parts:  # a just-created topic may show up without partitions for a moment
        assert time.monotonic() < deadline, f"topic {topic} has no partitions"
        md = consumer.list_topics(topic, timeout=10).topics.get(topic)
        parts = {} if md is None or md.error is not None else md.partitions
        if not parts:
            time.sleep(0.2)
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
    return consumer


def consume(settings: Settings, topic: str, expect: int, timeout_s: float = 60.0,
            settle_s: float = 0.0) -> list[Message]:
    """Read a topic from the beginning until ``expect`` records arrived (then ``settle_s`` more) or time ran out."""
    consumer = _assigned_consumer(settings, topic)
    out: list[Message] = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            for msg in consumer.consume(500, 0.5):
                if msg.error() is None:
                    out.append(msg)
            if len(out) >= expect:
                if settle_s <= 0:
                    break
                deadline, settle_s = time.monotonic() + settle_s, 0.0
    finally:
        consumer.close()
    return out


def collect_ids(settings: Settings, topic: str, want: set[str], timeout_s: float = 90.0) -> CountOf[str]:
    """Read ``topic`` until every wanted ``event_id`` was seen (or time ran out); returns how often each id came."""
    consumer = _assigned_consumer(settings, topic)
    seen: CountOf[str] = CountOf()
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline and not want <= seen.keys():
            for msg in consumer.consume(1000, 0.5):
                if msg.error() is None:
                    seen[str(orjson.loads(msg.value())["event_id"])] += 1
    finally:
        consumer.close()
    return seen


def event_ids(records: Iterable[Message]) -> set[str]:
    """The ``event_id`` of every JSON record."""
    return {str(orjson.loads(r.value())["event_id"]) for r in records}


class BridgeProcess:
    """``python -m citystream --config <file> bridge`` as a subprocess with its own client id and /metrics port."""

    def __init__(self, settings: Settings, workdir: Path, name: str, keepalive_s: int = 0,
                 **bridge_changes: Any) -> None:
        """Write the settings file of this replica and start it (returns once it is subscribed)."""
        from tests.conftest import REPO, free_port, write_settings
        own = settings.model_copy(deep=True)
        own.bridge.client_id = name
        if keepalive_s:
            own.mqtt.keepalive_s = keepalive_s
        for key, value in bridge_changes.items():
            setattr(own.bridge, key, value)
        own.metrics.port = free_port()
        self.settings, self.name, self.cwd = own, name, REPO
        self.config = write_settings(own, workdir / f"{name}.yaml")
        self.log_file = workdir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def _subscriptions(self) -> int:
        return self.log_file.read_text(errors="replace").count('msg="mqtt subscribed"') if self.log_file.exists() else 0

    def start(self, timeout_s: float = 60.0) -> None:
        """Start the process and wait for its SUBACK (so nothing published from now on can miss it)."""
        before = self._subscriptions()
        with open(self.log_file, "ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "citystream", "--config", str(self.config), "bridge"],
                                         stdout=out, stderr=subprocess.STDOUT, cwd=self.cwd)
        deadline = time.monotonic() + timeout_s
        while self._subscriptions() == before:
            assert self.proc.poll() is None, f"bridge {self.name} exited:\n{self.tail()}"
            assert time.monotonic() < deadline, f"bridge {self.name} did not subscribe:\n{self.tail()}"
            time.sleep(0.1)

    def tail(self, lines: int = 30) -> str:
        """The end of this replica's log."""
        return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """Scrape /metrics: (sample name, sorted labels) -> value."""
        url = f"http://127.0.0.1:{self.settings.metrics.port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as resp:
            text = resp.read().decode()
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for fam in text_string_to_metric_families(text) for s in fam.samples}

    def metric(self, name: str, **labels: str) -> float:
        """One sample of the scraped metrics (0 when absent)."""
        return self.metrics().get((name, tuple(sorted(labels.items()))), 0.0)

    def kill(self) -> None:
        """SIGKILL, no chance to flush or ack."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(30)

    def stop(self, timeout_s: float = 40.0) -> int:
        """SIGTERM and wait; returns the exit code (a process that ignores SIGTERM is killed)."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc is not None else 0
        self.proc.terminate()
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            return -9
