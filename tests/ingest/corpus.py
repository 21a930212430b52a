"""A generated corpus of malformed gateway messages (issue 15), each a single mutation of a valid one.

:func:`generate` draws ``minimum`` or more bad messages from ``FAMILIES`` with a seeded ``random.Random``
(another seed gives a held-out corpus of the same shape), plus valid traffic to publish beside them.
Every bad message carries the stage that must reject it and the DeadLetter reason:

- stage ``bridge``: everything the contract, the topic map, the FrameMeta properties and the JPEG
  marker structure can tell (coercion, repeated keys, unbounded integers, out-of-range values,
  non-finite numbers, bad JSON, bad topics, repeated/unknown/non-canonical user properties, bytes after
  EOI, progressive scans cut short, bombs, size mismatches…);
- stage ``worker``: JPEGs whose marker structure is intact but whose entropy-coded data is cut short
  or corrupt — only decoding tells (``corrupt_jpeg``).

Each payload is unique (own seq and device, a JPEG comment segment for frames) so a dead letter can be
matched to its message by the bytes it carries.
"""

from __future__ import annotations

import io
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import orjson
from PIL import Image

from citystream.schemas.events import make_event_id
from citystream.schemas.ranges import RANGES
from citystream.schemas.topics import mqtt_topic
from tests.ingest.malformed import (
    GATEWAY,
    TENANT,
    Msg,
    dumps,
    frame,
    now_iso,
    progressive_cut,
    reading_doc,
    status_doc,
    with_sof_size,
)

BAD_GATEWAY = "gw-corpus"  # bad messages that name a gateway use this one (or a variant), valid traffic GATEWAY
FRAME_GATEWAY = GATEWAY


@dataclass
class Corpus:
    """Bad messages (``reason``/``stage`` set) and valid traffic (``reason`` None)."""

    bad: list[Msg] = field(default_factory=list)
    valid: list[Msg] = field(default_factory=list)
    stage_of: dict[int, str] = field(default_factory=dict)  # id(msg) -> "bridge" | "worker"
    order: list[Msg] = field(default_factory=list)  # everything, in the order to publish it

    def stage(self, msg: Msg) -> str:
        """The stage that must reject ``msg``."""
        return self.stage_of[id(msg)]


def _jpeg(width: int, height: int, rng: random.Random, progressive: bool = False, noise: bool = False) -> bytes:
    if noise:
        pixels = (np.random.default_rng(rng.randrange(2**32)).random((height, width, 3)) * 255).astype(np.uint8)
        image = Image.fromarray(pixels)
    else:
        image = Image.new("RGB", (width, height), (rng.randrange(256), rng.randrange(256), rng.randrange(256)))
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=80, progressive=progressive)
    return out.getvalue()


def with_comment(data: bytes, text: str) -> bytes:
    """The JPEG with a COM segment after SOI (a valid JPEG, made unique)."""
    body = text.encode()
    return data[:2] + b"\xff\xfe" + (len(body) + 2).to_bytes(2, "big") + body + data[2:]


class _Maker:
    """Builds single-mutation messages with unique seqs, devices and bodies."""

    def __init__(self, root: str, rng: random.Random, max_reading: int, max_frame: int, skew_s: float) -> None:
        self.root, self.rng, self.max_reading, self.max_frame, self.skew_s = root, rng, max_reading, max_frame, skew_s
        self.n = 0
        self.base = {"plain": _jpeg(32, 24, rng), "progressive": _jpeg(32, 24, rng, progressive=True),
                     "noise": _jpeg(64, 48, rng, noise=True)}

    def next(self) -> int:
        self.n += 1
        return 100_000 + self.n

    # --- readings -----------------------------------------------------------------------------------
    def doc(self) -> tuple[dict[str, Any], str]:
        seq = self.next()
        device = f"pm-{seq}"
        metric = self.rng.choice(sorted(RANGES))
        low, high = RANGES[metric]
        doc = {**reading_doc(seq, device, BAD_GATEWAY), "metric": metric,
               "value": round(self.rng.uniform(low, high), 3)}
        return doc, mqtt_topic(self.root, TENANT, BAD_GATEWAY, "sensor", device, "reading")

    def reading(self, **changes: Any) -> Msg:
        doc, topic = self.doc()
        return Msg(topic, dumps({**doc, **changes}))

    def raw_reading(self, edit: Callable[[bytes, dict[str, Any]], bytes]) -> Msg:
        doc, topic = self.doc()
        return Msg(topic, edit(dumps(doc), doc))

    # --- statuses -----------------------------------------------------------------------------------
    def status(self, **changes: Any) -> Msg:
        seq = self.next()
        return Msg(mqtt_topic(self.root, TENANT, BAD_GATEWAY, "gateway", BAD_GATEWAY, "status"),
                   dumps(status_doc(seq, BAD_GATEWAY, **changes)))

    # --- frames -------------------------------------------------------------------------------------
    def body(self, kind: str = "plain") -> bytes:
        return with_comment(self.base[kind], f"corpus {self.n} {uuid.uuid4().hex}")

    def frame(self, body: bytes | None = None, size: tuple[int, int] = (32, 24), **meta: Any) -> Msg:
        seq = self.next()
        return frame(self.root, seq, self.body() if body is None else body, f"cam-{seq}", size, **meta)


def _dup_key(m: _Maker) -> Msg:
    doc, topic = m.doc()
    key = m.rng.choice(sorted(doc))
    other = {"metric": '"noise_db_a"', "value": "1", "seq": "1", "tenant": '"other"', "district": '"x"'}
    repeat = (other.get(key) if m.rng.random() < 0.5 else None) or orjson.dumps(doc[key]).decode()
    pair = f'"{key}":{repeat}'.encode()
    raw = dumps(doc)
    body = raw[:-1] + b"," + pair + b"}" if m.rng.random() < 0.5 else b"{" + pair + b"," + raw[1:]
    return Msg(topic, body)


def _range(m: _Maker) -> Msg:
    doc, topic = m.doc()
    low, high = RANGES[doc["metric"]]
    value = m.rng.choice([high + m.rng.uniform(0.001, 1e6), low - m.rng.uniform(0.001, 1e6),
                          m.rng.uniform(1e300, 1.7e308), -m.rng.uniform(1e300, 1.7e308), high * 1.0001 + 1])
    return Msg(topic, dumps({**doc, "value": value}))


def _skewed(m: _Maker) -> Msg:
    delta = (m.skew_s + m.rng.uniform(60, 10 * 365 * 86400)) * m.rng.choice([-1, 1])
    return m.reading(captured_at=(datetime.now(UTC) + timedelta(seconds=delta)).isoformat(timespec="milliseconds"))


def _unknown_topic(m: _Maker) -> Msg:
    doc, topic = m.doc()
    parts = topic.split("/")
    choice = m.rng.randrange(4)
    if choice == 0:
        parts[3] = m.rng.choice(["camera", "gateway", "toaster", "Sensor"])
    elif choice == 1:
        parts[5] = m.rng.choice(["frame", "status", "readings", "READING"])
    else:
        parts[m.rng.choice([1, 2, 4])] = ""
    return Msg("/".join(parts), dumps(doc))


def _mismatch(m: _Maker) -> Msg:
    field_name = m.rng.choice(["device_id", "tenant", "gateway_id"])
    doc, topic = m.doc()
    value = {"device_id": f"pm-x{m.n}", "tenant": "other-city", "gateway_id": f"gw-other-{m.n}"}[field_name]
    doc[field_name] = value
    if field_name == "gateway_id":
        doc["event_id"] = make_event_id(value, "reading", doc["seq"])
    return Msg(topic, dumps(doc))


def _bad_event_id(m: _Maker) -> Msg:
    doc, topic = m.doc()
    doc["event_id"] = m.rng.choice([str(uuid.uuid4()), make_event_id(BAD_GATEWAY, "frame", doc["seq"]),
                                    make_event_id(BAD_GATEWAY, "reading", doc["seq"] + 1)])
    return Msg(topic, dumps(doc))


def _not_json(m: _Maker) -> Msg:
    doc, topic = m.doc()
    raw = dumps(doc)
    choice = m.rng.randrange(4)
    if choice == 0:
        body = raw[:m.rng.randrange(len(raw) - 1)]
    elif choice == 1:
        body = raw.replace(b'"district":"', b'"district":"\xff\xfe', 1)
    elif choice == 2:
        body = raw.replace(b'"', b"'")
    else:
        body = bytes(m.rng.randrange(256) for _ in range(m.rng.randrange(1, 200))).replace(b"{", b"(") + b"#"
    return Msg(topic, body)


def _oversized(m: _Maker) -> Msg:
    doc, topic = m.doc()
    return Msg(topic, dumps(doc) + b" " * (m.max_reading + m.rng.randrange(1, 5000)))


def _props(msg: Msg, edit: Callable[[list[tuple[str, str]]], list[tuple[str, str]]]) -> Msg:
    msg.props = edit(list(msg.props))
    return msg


def _with_props(msg: Msg, props: list[tuple[str, str]]) -> Msg:
    msg.props = props
    return msg


def _without(m: _Maker, name: str) -> Msg:
    doc, topic = m.doc()
    return Msg(topic, dumps({k: v for k, v in doc.items() if k != name}))


def _props_without(m: _Maker, name: str) -> Msg:
    return _props(m.frame(), lambda props: [kv for kv in props if kv[0] != name])


def _repeat_prop(m: _Maker, conflicting: bool) -> Msg:
    msg = m.frame()
    key, value = m.rng.choice(msg.props)
    if conflicting:
        value = {"tenant": "other-city", "width": "64", "height": "48", "seq": "1", "keyframe": "true"}.get(key, "x")
    position = m.rng.randrange(len(msg.props) + 1)
    msg.props.insert(position, (key, value))
    return msg


def _noncanonical(m: _Maker) -> Msg:
    name = m.rng.choice(["width", "height", "jpeg_bytes", "seq", "schema_version", "keyframe", "motion_score"])
    msg = m.frame()
    current = dict(msg.props)[name]
    if name == "keyframe":
        forms = ["1", "0", "True", "False", "yes", "TRUE", " false"]
    elif name == "motion_score":
        forms = ["1.5", "-0.1", "true", f"{current} ", "'0.25'", "0,25", "2e0"]
    else:
        forms = [f" {current}", f"{current}.0", f"+{current}", f"0x{int(current):x}", f"{current} ", f"{current}e0",
                 "true", str(2**64), "-1"]
    value = m.rng.choice(forms)
    return _props(msg, lambda props: [(k, value if k == name else v) for k, v in props])


def _decode_only(m: _Maker, seq: int) -> Msg:
    """A noise JPEG whose scan data is cut short (EOI appended) or corrupted in place; markers intact."""
    data = m.body("noise")
    scan = data.find(b"\xff\xda")
    start = scan + 2 + int.from_bytes(data[scan + 2:scan + 4], "big")
    if m.rng.random() < 0.5:
        cut = m.rng.randrange(start + 16, len(data) - 64)
        body = data[:cut] + b"\xff\xd9"
    else:  # corrupt bytes, and the scan ends early: random garbage alone can form a consistent bitstream
        at = m.rng.randrange(start + 16, len(data) - 400)
        junk = bytes(m.rng.randrange(256) for _ in range(m.rng.randrange(8, 300))).replace(b"\xff", b"\x00")
        body = data[:at] + junk + data[at + m.rng.randrange(0, 200):]
        body = body[:len(body) - m.rng.randrange(64, 400)] + b"\xff\xd9"
    return frame(m.root, seq, body, "cam-1", (64, 48))


def _bomb(m: _Maker) -> Msg:
    width, height = m.rng.randrange(4096, 8193), m.rng.randrange(4096, 8193)
    body = with_sof_size(m.body(m.rng.choice(["plain", "progressive"])), width, height)
    return m.frame(body, (width, height))


def _mismatched(m: _Maker) -> Msg:
    if m.rng.random() < 0.5:
        return m.frame(None, (32, 24), **{m.rng.choice(["width", "height"]): str(m.rng.randrange(40, 8000))})
    return m.frame(with_sof_size(m.body(), m.rng.randrange(33, 4000), 24))


def _trailing(m: _Maker) -> tuple[Msg, str]:
    tail = bytes(m.rng.randrange(256) for _ in range(m.rng.randrange(1, 64)))
    if m.rng.random() < 0.7:
        return m.frame(m.body() + tail + b"\xff\xd9"), "bad_jpeg"  # still ends with EOI: only the walk sees it
    return m.frame(m.body() + tail.rstrip(b"\xff") + b"!"), "not_jpeg"


# family name -> (maker, reason); a maker returning (Msg, reason) decides the reason itself.
FAMILIES: dict[str, tuple[Callable[[_Maker], Any], str]] = {
    "value bool": (lambda m: m.reading(value=m.rng.choice([True, False])), "schema"),
    "value string number": (lambda m: m.reading(value=str(round(m.rng.uniform(0, 100), 2))), "schema"),
    "value null/list/object": (lambda m: m.reading(value=m.rng.choice([None, [1.5], {"v": 1.5}])), "schema"),
    "seq coerced": (lambda m: m.reading(seq=m.rng.choice([str(m.n), float(m.n + 101_000), True])), "schema"),
    "epoch timestamp": (lambda m: m.reading(captured_at=m.rng.choice([int(time.time() * 1000), time.time(),
                                                                      str(int(time.time()))])), "schema"),
    "timestamp forms": (lambda m: m.reading(captured_at=m.rng.choice([
        now_iso()[:10], now_iso().replace("T", " "), now_iso()[:23], now_iso()[:19] + "+0700",
        "2026-13-01T00:00:00Z", "2026-02-30T00:00:00Z"])), "schema"),
    "version coerced": (lambda m: m.reading(schema_version=m.rng.choice(["1", 1.0, True])), "schema"),
    "metric coerced": (lambda m: m.reading(metric=m.rng.choice([1, ["pm25_ug_m3"], "PM25_UG_M3", "pm1"])), "schema"),
    "seq beyond int64": (lambda m: m.reading(seq=m.rng.choice([2**63, 2**63 + m.rng.randrange(2**62), 2**64 - 1,
                                                               2**64 + m.rng.randrange(10**6), 10**25])), "schema"),
    "version beyond uint16": (lambda m: m.reading(schema_version=m.rng.randrange(65_536, 10**9)), "schema"),
    "missing field": (lambda m: _without(m, m.rng.choice(["event_id", "tenant", "seq", "metric", "value"])),
                      "schema"),
    "extra field": (lambda m: m.reading(**{m.rng.choice(["unit", "Value", "extra", "quality"]): 1}), "schema"),
    "duplicate key": (_dup_key, "duplicate_key"),
    "out of range": (_range, "out_of_range"),
    "non-finite": (lambda m: m.raw_reading(lambda raw, doc: raw.replace(
        b'"value":' + orjson.dumps(doc["value"]), b'"value":' + m.rng.choice([b"NaN", b"Infinity", b"-Infinity",
                                                                              b"1e999", b"-1e400"]))), "non_finite"),
    "not json": (_not_json, "not_json"),
    "clock skew": (_skewed, "clock_skew"),
    "unknown topic": (_unknown_topic, "unknown_topic"),
    "topic mismatch": (_mismatch, "topic_mismatch"),
    "bad event id": (_bad_event_id, "bad_event_id"),
    "oversized reading": (_oversized, "oversized"),
    "oversized user properties": (lambda m: _with_props(m.reading(), [(f"p{i}", "x" * 1000)
                                                                      for i in range(m.max_reading // 1000 + 1)]),
                                  "oversized"),
    "reading with user properties": (lambda m: _with_props(m.reading(), m.rng.choice(
        [[("bridge_received_at", now_iso())], [("trace", "1"), ("trace", "1")], [("a", "1"), ("a", "2")]])),
        "bad_properties"),
    "status duplicate key": (lambda m: Msg(m.status().topic, m.status().payload[:-1] + b',"state":"offline"}'),
                             "duplicate_key"),
    "status beyond bounds": (lambda m: m.status(**m.rng.choice([
        {"queue_depth": 2**32}, {"dropped": 2**63}, {"spool_bytes": 2**64}, {"gap_from_seq": 2**64},
        {"fps": 1e6}, {"fps": -1}])), "schema"),
    "status coerced": (lambda m: m.status(**m.rng.choice([{"fps": True}, {"dropped": "3"}, {"queue_depth": 1.0},
                                                           {"state": 1}])), "schema"),
    "frame property repeated": (lambda m: _repeat_prop(m, False), "bad_frame_meta"),
    "frame property conflicting": (lambda m: _repeat_prop(m, True), "bad_frame_meta"),
    "frame property unknown": (lambda m: _props(m.frame(), lambda p: [*p, (m.rng.choice(
        ["colour", "bridge_received_at", "Tenant", "x-trace", ""]), "1")]), "bad_frame_meta"),
    "frame property not canonical": (_noncanonical, "bad_frame_meta"),
    "frame property missing": (lambda m: _props_without(m, m.rng.choice(
        ["event_id", "tenant", "seq", "width", "jpeg_bytes", "captured_at"])), "bad_frame_meta"),
    "frame jpeg_bytes wrong": (lambda m: m.frame(None, (32, 24), jpeg_bytes=str(m.rng.randrange(1, 10**6))),
                               "bad_frame_meta"),
    "frame NaN score": (lambda m: m.frame(None, (32, 24), motion_score=m.rng.choice(["NaN", "Infinity", "-inf"])),
                        "non_finite"),
    "frame bytes after EOI": (_trailing, ""),
    "progressive scans cut short": (lambda m: m.frame(progressive_cut(m.body("progressive"), m.rng.randrange(1, 5))),
                                    "bad_jpeg"),
    "decompression bomb": (_bomb, "frame_too_large"),
    "frame size mismatch": (_mismatched, "frame_size_mismatch"),
    "not a jpeg": (lambda m: m.frame(m.rng.choice([b"\x89PNG\r\n\x1a\n", b"GIF89a", b"RIFF"]) + m.body()),
                   "not_jpeg"),
}


def generate(root: str, seed: int, minimum: int = 1000, decode_only: int = 60, valid_readings: int = 120,
             valid_frames: int = 20, valid_statuses: int = 10, max_reading: int = 16 * 1024,
             max_frame: int = 64 * 1024, max_clock_skew_s: float = 7 * 86400.0) -> Corpus:
    """At least ``minimum`` bad messages (``decode_only`` of them for the worker) and valid traffic beside them."""
    rng = random.Random(seed)
    maker = _Maker(root, rng, max_reading, max_frame, max_clock_skew_s)
    corpus = Corpus()
    names = sorted(FAMILIES)
    while len(corpus.bad) < minimum - decode_only:
        for name in names:
            make, reason = FAMILIES[name]
            made = make(maker)
            msg, got_reason = made if isinstance(made, tuple) else (made, reason)
            msg.reason = got_reason
            corpus.bad.append(msg)
            corpus.stage_of[id(msg)] = "bridge"
    # Valid frames and decode-only bad frames share one camera with contiguous seqs, kept in seq order.
    corrupt = set(rng.sample(range(valid_frames + decode_only), decode_only))
    frames: list[Msg] = []
    for seq in range(valid_frames + decode_only):
        if seq in corrupt:
            msg = _decode_only(maker, seq)
            msg.reason = "corrupt_jpeg"
            corpus.bad.append(msg)
            corpus.stage_of[id(msg)] = "worker"
        else:
            msg = frame(root, seq, with_comment(maker.base["noise"], f"valid {seq}"), "cam-1", (64, 48))
            corpus.valid.append(msg)
        frames.append(msg)
    readings = []
    for seq in range(valid_readings):
        doc = reading_doc(seq, f"pm-{seq % 5}")
        metric = rng.choice(sorted(RANGES))
        low, high = RANGES[metric]
        doc.update(metric=metric, value=rng.choice([low, high, round(rng.uniform(low, high), 2), int(low)]))
        if seq % 7 == 0:
            doc["district"] = 'ซอย "ร่มเกล้า"'  # a quote in the text: valid, takes the full path
        readings.append(Msg(mqtt_topic(root, TENANT, GATEWAY, "sensor", doc["device_id"], "reading"),
                            orjson.dumps(doc), event_id=doc["event_id"]))
    statuses = []
    for seq in range(valid_statuses):
        doc = status_doc(seq)
        statuses.append(Msg(mqtt_topic(root, TENANT, GATEWAY, "gateway", GATEWAY, "status"), orjson.dumps(doc),
                            event_id=doc["event_id"]))
    corpus.valid += readings + statuses
    rejected_at_bridge = [m for m in corpus.bad if corpus.stage(m) == "bridge"]
    rng.shuffle(rejected_at_bridge)
    corpus.order = _merge(rng, [rejected_at_bridge, frames, readings, statuses])
    return corpus


def _merge(rng: random.Random, queues: list[list[Msg]]) -> list[Msg]:
    """All messages interleaved at random, each queue's own order kept (a device's seqs stay in order)."""
    heads = [0] * len(queues)
    out: list[Msg] = []
    weights = [len(q) for q in queues]
    while any(h < len(q) for h, q in zip(heads, queues, strict=True)):
        i = rng.choices(range(len(queues)), weights=[w if heads[k] < len(queues[k]) else 0
                                                     for k, w in enumerate(weights)])[0]
        out.append(queues[i][heads[i]])
        heads[i] += 1
    return out
