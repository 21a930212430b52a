"""MQTT -> Kafka bridge: acknowledges each MQTT message to Mosquitto only after Kafka has it.

Delivery guarantee: **at-least-once into Kafka**; duplicates are removed downstream by ``event_id``.
A device gets its PUBACK from Mosquitto once Mosquitto stored the message; from then on the message
waits in the bridge's MQTT session until Kafka confirmed it, so no crash or outage of the bridge or
of Kafka loses it (Mosquitto's own limits are listed below).

- The bridge subscribes with an MQTT v5 shared subscription (``$share/<group>/<root>/#``,
  QoS 1) with ``manual_ack``: the PUBACK of a message is sent only from the confluent-kafka delivery
  report that confirmed its record (``acks=all``, idempotent producer) — or the record of its dead
  letter. Until then Mosquitto owns the message.
- The session is persistent (``clean_start=False``, ``bridge.session_expiry_s``) under a stable
  client id, so messages published while the bridge is down or restarting wait in Mosquitto and
  unacked ones are redelivered on reconnect (same client id!). A crash (``kill -9``) loses nothing;
  records Kafka confirmed but whose PUBACK was not sent yet arrive again: duplicates.
- Readiness: Mosquitto 2.0 restores a persistent session after a restart but not its ``$share``
  subscription, and it PUBACKs and drops a message no subscription matches. So once its subscription
  is acknowledged, the bridge publishes ``{root}/_bridge/ready`` (QoS 0, not retained) every
  ``bridge.ready_interval_s``, and gateways publish nothing on a connection before they have seen
  one (``gateway.wait_for_bridge``): an announcement received on a gateway's connection was sent
  after some bridge subscribed in this broker's lifetime, and a subscription, once made, stays in
  its session while the broker runs. This covers the first start, a clean broker restart, a broker
  crash and any number of replicas on the share. Publishers that ignore the announcement (not
  citystream gateways) can still lose messages sent before the first bridge re-subscribes.
- Confirmations: once Kafka confirmed a record (or the dead letter that replaces it), its
  (tenant, gateway, stream, seq) is sent back to the gateway on ``{root}/_bridge/confirm/{tenant}/
  {gateway}`` every ``bridge.confirm_interval_s`` (:mod:`citystream.ingest.confirm`); gateways keep a
  row until it is confirmed and send unconfirmed rows again after a reconnect. So what Mosquitto
  acked and then lost — a ``kill -9`` between its snapshots — comes again (duplicates, same ids).
- What Mosquitto keeps for a stopped bridge is bounded by its own settings: beyond
  ``max_queued_messages``/``max_queued_bytes`` per session Mosquitto drops (the stack sets them
  high); after ``session_expiry_s`` offline the session and its queue are gone. With shared
  subscriptions Mosquitto keeps giving a stopped replica its share until its session expires:
  restart replicas under the same client id, or run a single one. Mosquitto keeps its queues in
  memory and saves them every ``autosave_interval``: a crash of Mosquitto itself loses what
  arrived since its last save.
- A connection loss starts a new generation: acks of older messages are dropped, the broker
  redelivers them (duplicates, never loss).
- Backpressure: at most ``bridge.max_inflight`` messages and ``bridge.max_inflight_bytes`` (plus
  one message) are between MQTT and the Kafka confirmation. When full the bridge stops reading the
  socket and Mosquitto queues; nothing grows without bound. The bound is the bridge's own: it is
  also sent as MQTT v5 ReceiveMaximum, but Mosquitto 2.0.11 does not hold to it once acks flow.
  Blocked longer than about two keepalives, paho drops the connection (it cannot read the
  PINGRESP); the bridge then stays offline until Kafka frees the window and reconnects to its
  session: unacked messages are redelivered (duplicates), queued ones follow. When Kafka is down,
  records fail after ``delivery_timeout_ms`` and are re-produced until it returns; the bridge
  recovers by itself.
- Bad input (see ``ingest/bridge/validate.py`` for reasons) becomes a ``DeadLetter`` (original topic,
  bytes, user properties, reason) on the DLQ topic and is acked once that record is confirmed.
- Ordering: per device in order in the normal case; a re-produced record after a delivery failure
  or a redelivery can land after later ones (consumers order by ``seq``/``captured_at``).
- Gaps in a gateway's ``seq`` produce a ``DeviceStatus(state="gap")`` on ``device.status``
  (best effort, not tied to any ack; see ``ingest/bridge/seqtrack.py`` for its in-memory limits).

Threads: one. The loop thread runs the paho socket I/O (``loop_read``/``loop_write``/``loop_misc``)
and ``Producer.poll`` (delivery reports), so ``client.ack`` is only ever called on paho's thread.
SIGTERM/SIGINT: stop reading, wait for delivery reports (``bridge.shutdown_timeout_s``), send the
acks, disconnect (the session and unacked messages stay in Mosquitto), exit 0.
"""

from __future__ import annotations

import logging
import select
import signal
import socket
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from types import FrameType
from typing import Any

import orjson
import paho.mqtt.client as mqtt
from confluent_kafka import KafkaError, Message
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions
from prometheus_client import REGISTRY, CollectorRegistry

from citystream.ingest.bridge.inflight import InflightWindow, Slot
from citystream.ingest.bridge.kafka import KafkaOut, is_permanent
from citystream.ingest.bridge.metrics import BridgeMetrics
from citystream.ingest.bridge.mqtt import BridgeClient, FastMessage
from citystream.ingest.bridge.seqtrack import Gap, SeqTracker
from citystream.ingest.bridge.validate import RECEIVED_HEADER, Accepted, Headers, Rejected, Validator, received_at
from citystream.ingest.confirm import Confirmations
from citystream.metrics import serve_metrics
from citystream.retry import Backoff
from citystream.schemas.events import DeadLetter, DeviceStatus, derived_event_id, make_event_id
from citystream.schemas.topics import (
    DEVICE_STATUS,
    DLQ,
    KAFKA_TOPIC_OF_STREAM,
    bridge_ready_topic,
    is_bridge_control,
    mqtt_subscription,
)
from citystream.schemas.wire import to_json
from citystream.settings import Settings

log = logging.getLogger(__name__)

READ_BURST = 256
IDLE_WAIT_S = 0.1
BUSY_WAIT_S = 0.001
FULL_WAIT_S = 0.005


def _text(value: str | bytes | None) -> str:
    """A header value as text, whether librdkafka hands back bytes or the str we produced."""
    return value.decode(errors="replace") if isinstance(value, bytes) else (value or "")


def _all_properties(props: list[tuple[str, str]]) -> dict[str, str]:
    """User properties as a map that keeps repeats: the n-th copy of a name is stored as ``name[n]``."""
    out: dict[str, str] = {}
    seen: dict[str, int] = {}
    for name, value in props:
        seen[name] = seen.get(name, 0) + 1
        out[name if seen[name] == 1 else f"{name}[{seen[name]}]"] = value
    return out


class BridgeError(Exception):
    """The bridge cannot run (e.g. the broker refused its login); the process exits 1."""


def default_client_id(settings: Settings) -> str:
    """``bridge.client_id`` or one stable per host and share group (kept across restarts)."""
    if settings.bridge.client_id:
        return settings.bridge.client_id
    host = "".join(c if c.isalnum() or c in "-_." else "-" for c in socket.gethostname())
    return f"{settings.bridge.share_group}-{host}"[:64]


class Bridge:
    """One bridge replica: a paho client, two producers and the in-flight window, driven by ``run``."""

    def __init__(self, settings: Settings, registry: CollectorRegistry = REGISTRY,
                 clock: Callable[[], float] = time.time) -> None:
        """Build the bridge; nothing connects until ``run``."""
        self.settings = settings
        b = settings.bridge
        self.client_id = default_client_id(settings)
        self.clock = clock
        self.window = InflightWindow(b.max_inflight, b.max_inflight_bytes)
        self.validator = Validator(b, settings.mqtt.topic_root, clock)
        self.tracker = SeqTracker(b.seq_max_keys) if b.track_sequences else None
        self.metrics = BridgeMetrics(registry)
        self.out = KafkaOut(settings.kafka, b, self.client_id)
        self.topics = {stream: settings.kafka.topic(base) for stream, base in KAFKA_TOPIC_OF_STREAM.items()}
        self.dlq_topic = settings.kafka.topic(DLQ)
        self.status_topic = settings.kafka.topic(DEVICE_STATUS)
        self.stopping = False
        self.subscribed = threading.Event()
        self.fatal: str | None = None
        self._reads = 0
        self._connected = False
        self._backoff = Backoff(0.5, settings.bridge.reconnect_max_s)
        self._started = False
        self._next_ready = 0.0
        self._next_confirm = 0.0
        self.ready_topic = bridge_ready_topic(settings.mqtt.topic_root)
        self.confirms = Confirmations(settings.mqtt.topic_root)
        self.mqtt = self._make_client()

    # --- MQTT side -----------------------------------------------------------------------------
    def _make_client(self) -> BridgeClient:
        m = self.settings.mqtt
        client = BridgeClient(CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=mqtt.MQTTv5,
                              manual_ack=True)
        client.username_pw_set(m.username, m.password.get_secret_value())
        if m.tls is not None:
            client.tls_set(ca_certs=str(m.tls.ca_file) if m.tls.ca_file else None,
                           certfile=str(m.tls.cert_file) if m.tls.cert_file else None,
                           keyfile=str(m.tls.key_file) if m.tls.key_file else None)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        return client

    def _connect(self) -> None:
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = self.settings.bridge.session_expiry_s
        props.ReceiveMaximum = self.settings.bridge.max_inflight
        m = self.settings.mqtt
        self.mqtt.connect(m.host, m.port, m.keepalive_s, clean_start=False, properties=props)

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: mqtt.ConnectFlags, reason: ReasonCode,
                    properties: Properties | None) -> None:
        if reason.is_failure:
            if reason.value in (0x86, 0x87, 0x8C):  # bad user name or password, not authorized, bad auth method
                self.fatal = f"MQTT broker refused login of '{self.settings.mqtt.username}': {reason}"
            log.error("mqtt connect refused", extra={"reason": str(reason)})
            return
        self._backoff.reset()
        self._connected = True
        flt = mqtt_subscription(self.settings.mqtt.topic_root, self.settings.bridge.share_group)
        client.subscribe(flt, options=SubscribeOptions(qos=1))
        log.info("mqtt connected", extra={"client_id": self.client_id, "session_present": flags.session_present,
                                          "subscription": flt})

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reasons: list[ReasonCode],
                      properties: Properties | None) -> None:
        failed = [str(r) for r in reasons if r.is_failure or r.value < 1]  # QoS 0 would mean at-most-once
        if failed:
            self.fatal = f"MQTT broker refused the subscription of '{self.settings.mqtt.username}': {', '.join(failed)}"
            return
        self.subscribed.set()
        self.metrics.subscribed.set(1)
        self._next_ready = 0.0  # announce at once: gateways wait for it
        log.info("mqtt subscribed", extra={"client_id": self.client_id, "granted_qos": [r.value for r in reasons]})

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: mqtt.DisconnectFlags, reason: ReasonCode,
                       properties: Properties | None) -> None:
        self.window.new_generation()
        if self._connected and not self.stopping:  # paho may report one loss twice
            self.metrics.reconnects.inc()
            log.warning("mqtt connection lost", extra={"reason": str(reason), "inflight": self.window.count})
        self._connected = False
        self.subscribed.clear()
        self.metrics.subscribed.set(0)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        self._reads += 1
        if msg.qos == 0 and is_bridge_control(msg.topic, self.settings.mqtt.topic_root):
            return  # another bridge's announcement or confirmation (QoS 0: nothing to ack)
        payload = bytes(msg.payload)
        slot = self.window.open(msg.mid, msg.qos, len(payload))
        topic = msg.topic
        props: list[tuple[str, str]] = (msg.user_properties if isinstance(msg, FastMessage)
                                        else getattr(msg.properties, "UserProperty", None) or [])
        tail = topic.rpartition("/")[2]
        received = self.metrics.received_due
        received[tail if tail in received else "unknown"] += 1
        try:
            result = self.validator.check(topic, payload, props)
        except Exception as exc:  # never crash on input: an unforeseen case is a dead letter too
            log.exception("validation failed unexpectedly", extra={"topic": topic})
            result = Rejected("internal_error", f"{type(exc).__name__}: {exc}")
        if isinstance(result, Accepted):
            ident = (result.tenant, result.gateway, result.stream, result.seq)
            self.out.produce(self.topics[result.stream], payload, result.key, result.headers,
                             partial(self._delivered, slot, result.stream, ident, result.headers),
                             frame=result.stream == "frame")
            if self.tracker is not None:
                self._track(result)
        else:
            self._dead_letter(slot, topic, payload, props, result, self.confirms.identify(topic, payload, props))

    # --- Kafka side ----------------------------------------------------------------------------
    def _delivered(self, slot: Slot, stream: str, ident: tuple[str, str, str, int] | None, headers: Headers | None,
                   err: KafkaError | None, msg: Message) -> None:
        # A delivery report carries no headers (confluent-kafka 2.16 gives None): the record's own are passed in.
        if err is None:
            produced = self.metrics.produced_due
            produced[stream] = produced.get(stream, 0) + 1
            self.window.close(slot)
            if ident is not None:
                self.confirms.add(*ident)
            return
        if is_permanent(err) and stream != "dlq":
            log.error("kafka rejected record", extra={"topic": msg.topic(), "error": err.str()})
            rej = Rejected("kafka_rejected", f"kafka: {err.str()}", key=(msg.key() or b"").decode(errors="replace"))
            props = [(k, _text(v)) for k, v in (headers or [])]
            self._dead_letter(slot, msg.topic() or "", msg.value() or b"", props, rej, ident)
            return
        self.metrics.retries.inc()
        log.warning("kafka delivery failed, producing again", extra={"topic": msg.topic(), "error": err.str()})
        self.out.produce(msg.topic() or "", msg.value() or b"", msg.key(), headers,
                         partial(self._delivered, slot, stream, ident, headers), frame=stream == "frame")

    def _dead_letter(self, slot: Slot, topic: str, payload: bytes, props: list[tuple[str, str]],
                     rej: Rejected, ident: tuple[str, str, str, int] | None = None) -> None:
        keep = self.settings.bridge.dlq_max_original_bytes
        detail = rej.detail
        if len(payload) > keep:
            detail = f"{detail} (original truncated to {keep} of {len(payload)} bytes)"
            payload = payload[:keep]
        letter = DeadLetter.build(stage="bridge", reason=rej.reason, detail=detail, topic=topic, payload=payload,
                                  headers=_all_properties(props), tenant=rej.tenant)
        self.metrics.dlq.labels(rej.reason).inc()
        log.info("dead letter", extra={"reason": rej.reason, "topic": topic, "detail": detail[:200]})
        self.out.produce(self.dlq_topic, to_json(letter), rej.key or None, None,
                         partial(self._delivered, slot, "dlq", ident, None))

    def _track(self, acc: Accepted) -> None:
        assert self.tracker is not None
        outcome, gap = self.tracker.observe(acc.tenant, acc.gateway, acc.stream, acc.seq)
        if outcome == "duplicate":
            self.metrics.duplicates.labels(acc.stream).inc()
        elif outcome == "late":
            self.metrics.late.labels(acc.stream).inc()
        elif gap is not None:
            self.metrics.gaps.labels(acc.stream).inc()
            self.metrics.missing.labels(acc.stream).inc(gap.missing)
            self._report_gap(gap)

    def _report_gap(self, gap: Gap) -> None:
        now = datetime.fromtimestamp(self.clock(), UTC)
        source = make_event_id(gap.gateway, gap.stream, gap.seen_seq)
        status = DeviceStatus(event_id=derived_event_id(source, "gap", 0), tenant=gap.tenant, gateway_id=gap.gateway,
                              device_id=gap.gateway, seq=gap.seen_seq, captured_at=now, state="gap",
                              gap_from_seq=gap.from_seq, gap_to_seq=gap.to_seq,
                              detail=f"stream={gap.stream} missing={gap.missing}")
        log.warning("sequence gap", extra={"gateway": gap.gateway, "stream": gap.stream, "from_seq": gap.from_seq,
                                           "to_seq": gap.to_seq})
        headers = [(RECEIVED_HEADER, received_at(now.timestamp()))]
        self.out.produce(self.status_topic, to_json(status), gap.gateway, headers,
                         partial(self._gap_delivered, 0, headers))

    def _gap_delivered(self, attempt: int, headers: Headers | None, err: KafkaError | None, msg: Message) -> None:
        if err is None or is_permanent(err) or attempt >= 10:
            if err is not None:
                log.error("gap status not delivered", extra={"error": err.str()})
            return
        self.out.produce(msg.topic() or "", msg.value() or b"", msg.key(), headers,
                         partial(self._gap_delivered, attempt + 1, headers))

    # --- loop ----------------------------------------------------------------------------------
    def run(self) -> None:
        """Serve until ``stop()``; then flush, ack what Kafka confirmed and disconnect."""
        while not self.stopping and self.mqtt.socket() is None:
            self._reconnect()
        try:
            while not self.stopping:
                self._step()
        finally:
            self._shutdown()

    def stop(self) -> None:
        """Ask the loop to finish (safe from a signal handler or another thread)."""
        self.stopping = True

    def _check_fatal(self) -> None:
        if self.fatal is not None:
            raise BridgeError(self.fatal)

    def _reconnect(self) -> None:
        self._check_fatal()
        try:
            if self._started:
                self.mqtt.reconnect()
            else:
                self._started = True
                self._connect()
            return
        except OSError as exc:
            error = str(exc)
        delay = self._backoff.next()
        log.warning("mqtt connect failed", extra={"error": error, "retry_in_s": round(delay, 3)})
        deadline = time.monotonic() + delay
        while time.monotonic() < deadline and not self.stopping:
            self.out.poll(0.05)

    def _step(self) -> None:
        self._check_fatal()
        full = self.window.full()
        started = time.monotonic() if full else 0.0
        sock = self.mqtt.socket()
        if sock is None:
            if not full:
                self._reconnect()
                return
            # Lost the connection while blocked (paho's keepalive fails when we do not read): stay
            # offline until Kafka frees the window; Mosquitto queues for the session meanwhile.
            self.out.poll(FULL_WAIT_S)
            self.metrics.blocked.inc(time.monotonic() - started)
            self._update_gauges()
            return
        if not full and self.mqtt.buffered():
            readable = True  # paho's next packets already wait in our read buffer
        else:
            busy = self.window.count > 0 or self.out.pending() > 0
            timeout = 0.0 if full else (BUSY_WAIT_S if busy else IDLE_WAIT_S)
            readable = bool(select.select(() if full else (sock,), (), (), timeout)[0])
        if readable and not self._read_burst():
            return
        self.out.poll(FULL_WAIT_S if full else 0.0)
        self._announce()
        self._flush_acks()
        if self.mqtt.loop_misc() != MQTTErrorCode.MQTT_ERR_SUCCESS:
            return
        if full:
            self.metrics.blocked.inc(time.monotonic() - started)
        self._update_gauges()

    def _announce(self) -> None:
        """Tell gateways that this bridge's subscription is in place, and which of their seqs Kafka has."""
        now = time.monotonic()
        if not self.subscribed.is_set():
            return
        if now >= self._next_confirm and len(self.confirms):
            self._next_confirm = now + self.settings.bridge.confirm_interval_s
            for topic, body in self.confirms.drain():
                self.mqtt.publish(topic, body, qos=0, retain=False)
        if now >= self._next_ready:
            self._next_ready = now + self.settings.bridge.ready_interval_s
            body = orjson.dumps({"client_id": self.client_id, "share_group": self.settings.bridge.share_group})
            self.mqtt.publish(self.ready_topic, body, qos=0, retain=False)

    def _update_gauges(self) -> None:
        self.metrics.flush()
        self.metrics.inflight.set(self.window.count)
        self.metrics.inflight_bytes.set(self.window.bytes)

    def _read_burst(self) -> bool:
        """Read packets while they come and the window has room; False when the connection dropped."""
        for _ in range(READ_BURST):
            before = self._reads
            if self.mqtt.loop_read() != MQTTErrorCode.MQTT_ERR_SUCCESS:
                return False
            if self._reads == before or self.window.full():
                break
        return True

    def _flush_acks(self) -> None:
        acks = self.window.take_acks()
        if acks:
            self.mqtt.ack_many(acks)
            self.metrics.acked.inc(len(acks))
        if self.mqtt.want_write():
            self.mqtt.loop_write()

    def _shutdown(self) -> None:
        """Wait (bounded) for Kafka to confirm what is in flight, send those acks, disconnect."""
        deadline = time.monotonic() + self.settings.bridge.shutdown_timeout_s
        while (self.window.count > 0 or self.out.pending() > 0) and time.monotonic() < deadline:
            self.out.poll(0.05)
            if self.mqtt.socket() is not None:
                self._flush_acks()
                self.mqtt.loop_misc()
        if self.mqtt.socket() is not None:
            self._flush_acks()
            self.mqtt.disconnect()
            for _ in range(20):
                if not self.mqtt.want_write() or self.mqtt.loop_write() != MQTTErrorCode.MQTT_ERR_SUCCESS:
                    break
        left = self.out.json.flush(1.0) + self.out.frames.flush(1.0)
        self.metrics.flush()
        log.info("bridge stopped", extra={"unconfirmed": self.window.count, "unflushed": left})


def run_bridge(settings: Settings, registry: CollectorRegistry = REGISTRY) -> None:
    """Run one bridge replica in this process until SIGTERM/SIGINT (serves /metrics when configured)."""
    bridge = Bridge(settings, registry)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("signal received, stopping", extra={"signal": signal.Signals(signum).name})
        bridge.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    serve_metrics(settings.metrics, registry)
    log.info("bridge starting", extra={"client_id": bridge.client_id, "mqtt": f"{settings.mqtt.host}:"
                                       f"{settings.mqtt.port}", "kafka": settings.kafka.bootstrap})
    bridge.run()
