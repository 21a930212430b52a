"""MQTT v5 QoS 1 publisher that drains the disk spool through a bounded in-flight window.

One thread owns the paho client (``client.loop()`` is called here, no paho network thread), so
callbacks, reconnects and publishes never race. Every message is already in the spool
(:mod:`citystream.ingest.gateway.spool`); this loop hands the next rows to paho while fewer than
``gateway.max_inflight`` (and the broker's Receive Maximum) are unacknowledged (paho's
``max_queued_messages`` is set to the same bound and a ``MQTT_ERR_QUEUE_SIZE`` answer simply leaves
the row in the spool). A row bigger than the broker's Maximum Packet Size is dropped and counted
(``too_large``) instead of blocking the spool forever. A row is deleted from the spool
only when its PUBACK arrives. A lost connection forgets what was in flight: the next connection uses
a fresh paho client (paho would resend its unacknowledged messages at once, before the bridge
announcement below) and feeds the spool again from its oldest row, in order; after a restart the
whole spool is published again.

Bridge readiness: with ``gateway.wait_for_bridge`` (default) the publisher subscribes to
``{root}/_bridge/ready`` on every connection and feeds nothing until a bridge announcement arrives
on that connection. A broker PUBACKs and drops a message that no subscription matches — and
Mosquitto 2.0 does not restore the bridge's shared subscription after a restart — so publishing
before a bridge has re-subscribed would lose messages the gateway already deleted. Meanwhile
captures wait in the spool (``spooled_total``); ``citystream_gateway_bridge_ready`` shows the state,
and a warning is logged every ``gateway.bridge_wait_warn_s`` (no bridge running, or an ACL that
does not let this gateway read the topic).

Confirmations: with ``gateway.confirm`` (default) a PUBACK no longer deletes a row: it waits until a
bridge confirms that Kafka has its seq (``{root}/_bridge/confirm/{tenant}/{gateway}``, see
:mod:`citystream.ingest.confirm`), and every row still unconfirmed is sent again after a reconnect.
A broker that acked a message and then lost it (a ``kill -9`` between its snapshots, a dropped
queue) therefore costs a duplicate, not the message. Confirmations travel at QoS 0 and die with a
killed bridge, so a row also goes again, without a reconnect, when it has waited
``gateway.confirm_timeout_s`` while a later seq of its stream was confirmed (the pipeline flows, this
one was missed) — or at all while stopping. During a Kafka outage nothing is confirmed, so nothing is
resent: the broker's queue does not fill with copies. ``citystream_gateway_unconfirmed_messages``
counts rows acked by the broker and not yet confirmed; ``citystream_gateway_resent_total`` the rows
sent again for want of a confirmation.

Delivery guarantee: at-least-once per message, in spool (= capture) order per gateway; duplicates
(a PUBACK lost with the connection, a crash between PUBACK and delete) carry the same ``event_id``
and are removed downstream. A PUBACK with a failure reason (e.g. 0x87 "Not authorized" from the
broker's ACL) is final: the row is dropped, counted in ``dropped{reason}`` and logged as an error.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from citystream.ingest import mqtt_tls
from citystream.ingest.confirm import seqs_of
from citystream.ingest.gateway.spool import Spool, Spooled
from citystream.retry import Backoff
from citystream.schemas.topics import bridge_confirm_topic, bridge_ready_topic
from citystream.settings import MqttSettings
from citystream.settings.gateway import GatewaySettings

log = logging.getLogger(__name__)

AUTH_REFUSED = {134, 135}  # Bad User Name or Password, Not authorized


class GatewayMetrics:
    """The gateway's Prometheus collectors (one set per registry, shared by simulated gateways)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        def counter(name: str, doc: str, labels: tuple[str, ...] = ()) -> Counter:
            return Counter(f"citystream_gateway_{name}", doc, labels, registry=registry)

        self.captured = counter("captured_total", "Messages captured and stored in the spool", ("stream",))
        self.published = counter("published_total", "Messages acknowledged by the broker (PUBACK)", ("stream",))
        self.spooled = counter("spooled_total", "Messages that had to wait in the disk spool "
                                                "(broker unreachable or in-flight window full)", ("stream",))
        self.replayed = counter("replayed_total", "Messages published from the spool after a reconnect or restart",
                                ("stream",))
        self.dropped = counter("dropped_total", "Messages or frames dropped, by reason", ("reason",))
        self.bytes = counter("published_bytes_total", "Payload bytes acknowledged by the broker", ("stream",))
        self.skipped = counter("frames_skipped_total", "Frames not published: fps cap or no motion", ("reason",))
        self.camera_errors = counter("camera_errors_total", "Camera open/read failures", ("reason",))
        self.connect_failures = counter("connect_failures_total", "Failed broker connection attempts: "
                                        "unreachable, auth (bad login / not authorized), refused", ("reason",))
        self.encode_seconds = Histogram("citystream_gateway_encode_seconds", "Resize + JPEG encode time per frame",
                                        buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
                                        registry=registry)
        self.spool_bytes = Gauge("citystream_gateway_spool_bytes", "Bytes waiting in the disk spool", registry=registry)
        self.spool_messages = Gauge("citystream_gateway_spool_messages", "Messages waiting in the disk spool",
                                    registry=registry)
        self.connected = Gauge("citystream_gateway_connected", "Gateways connected to the broker", registry=registry)
        self.resent = counter("resent_total", "Messages sent again because no bridge confirmed them in time",
                              ("stream",))
        self.unconfirmed = Gauge("citystream_gateway_unconfirmed_messages", "Messages the broker acked that no bridge "
                                 "has confirmed in Kafka yet (kept in the spool)", registry=registry)
        self.bridge_ready = Gauge("citystream_gateway_bridge_ready", "Gateways that saw a bridge announcement on "
                                  "their current connection (they publish only then)", registry=registry)
        self.cameras_up = Gauge("citystream_gateway_cameras_up", "Cameras delivering frames", registry=registry)
        for family, reasons in ((self.connect_failures, ("unreachable", "auth", "refused")),
                                (self.dropped, ("spool_full", "spool_error", "bad_frame", "bad_reading", "too_large")),
                                (self.camera_errors, ("not_found", "open_failed", "read_failed", "crashed"))):
            for reason in reasons:  # zero series from the start, so rules and panels see them
                family.labels(reason)
        for family in (self.captured, self.published, self.spooled, self.replayed, self.bytes, self.resent):
            for stream in ("reading", "frame", "status"):
                family.labels(stream)


@dataclass
class _InFlight:
    row: Spooled
    replay: bool


class Publisher:
    """Owns one paho client; ``run`` drains the spool until ``stop`` and the drain time are over."""

    def __init__(self, mqtt_settings: MqttSettings, gateway: GatewaySettings, spool: Spool,
                 metrics: GatewayMetrics, will: Callable[[], tuple[str, bytes]] | None = None) -> None:
        self.mqtt = mqtt_settings
        self.gateway = gateway
        self.spool = spool
        self.metrics = metrics
        self.connected = False
        self.auth_error: str | None = None
        self.connack = threading.Event()  # set once the first connection attempt has an outcome
        self._inflight: dict[int, _InFlight] = {}
        self._acked: list[int] = []
        self._cursor = 0
        self._replay_upto = spool.last_id
        self._socket_open = False
        self._next_attempt = 0.0
        self._backoff = Backoff(gateway.reconnect_min_s, gateway.reconnect_max_s)
        self._stop = threading.Event()
        self._drain_deadline = 0.0
        self._denied_logged = 0
        self._will = will
        self._will_needed = True
        self._last_will: tuple[str, bytes] | None = None
        self._fresh_client = False
        self._closing = False
        self._max_packet = 0
        self._window = gateway.max_inflight
        self._ready_topic = bridge_ready_topic(mqtt_settings.topic_root)
        self._confirm_topic = bridge_confirm_topic(mqtt_settings.topic_root, gateway.tenant, gateway.gateway_id)
        # (stream, seq) -> (spool row id, when the broker acked it): waiting for a bridge's confirmation
        self._awaiting: dict[tuple[str, int], tuple[int, float]] = {}
        self._early: set[tuple[str, int]] = set()  # confirmed before their PUBACK arrived
        self._last_confirmed: dict[str, int] = {}  # stream -> highest seq confirmed
        self._resend: list[Spooled] = []  # stale rows to publish again before the spool's next rows
        self._next_stale_check = 0.0
        self.bridge_ready = not gateway.wait_for_bridge
        self._connected_at = 0.0
        self._next_wait_warning = 0.0
        self.client = self._make_client()

    def _make_client(self) -> mqtt.Client:
        client_id = self.gateway.client_id or f"citystream-gw-{self.gateway.gateway_id}"
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        client.username_pw_set(self.gateway.username or None, self.gateway.password.get_secret_value() or None)
        client.max_inflight_messages_set(self.gateway.max_inflight)
        client.max_queued_messages_set(self.gateway.max_inflight)
        mqtt_tls.configure(client, self.mqtt)  # mqtt.tls: verify the broker (CA, host name)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        return client

    @property
    def window_full(self) -> bool:
        """True when new messages wait in the spool: no connection, no bridge yet, or the in-flight window is full."""
        return not self.connected or not self.bridge_ready or len(self._inflight) >= self._window

    # -- paho callbacks (all run in the publisher thread) --------------------------------------------------------

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            code = int(reason.value)
            message = f"broker refused the connection: {reason} (code {code}) for user {self.gateway.username!r}"
            if code in AUTH_REFUSED:
                self.auth_error = message
            self.metrics.connect_failures.labels("auth" if code in AUTH_REFUSED else "refused").inc()
            log.error("mqtt connect refused", extra={"reason": str(reason), "code": code,
                                                     "username": self.gateway.username})
            self.connack.set()
            return
        self.auth_error = None
        self.connected = True
        self._max_packet = int(getattr(props, "MaximumPacketSize", 0) or 0)
        # never more unacknowledged QoS 1 messages than the broker's Receive Maximum (paho does not check)
        self._window = max(1, min(self.gateway.max_inflight, int(getattr(props, "ReceiveMaximum", 0) or 65535)))
        self._will_needed = True
        self._backoff.reset()
        self._replay_upto = max(self._replay_upto, self.spool.last_id)
        self.metrics.connected.inc()
        if self.gateway.confirm:
            client.subscribe(self._confirm_topic, qos=0)
        if self.gateway.wait_for_bridge:
            self.bridge_ready = False
            self._connected_at = time.monotonic()
            self._next_wait_warning = self._connected_at + self.gateway.bridge_wait_warn_s
            client.subscribe(self._ready_topic, qos=0)
        log.info("mqtt connected", extra={"host": self.mqtt.host, "port": self.mqtt.port,
                                          "gateway": self.gateway.gateway_id, "spooled": self.spool.count})
        self.connack.set()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        if msg.topic == self._confirm_topic:
            self._confirmed(bytes(msg.payload))
            return
        if msg.topic != self._ready_topic or self.bridge_ready:
            return
        self.bridge_ready = True
        self.metrics.bridge_ready.inc()
        log.info("bridge ready; publishing", extra={"gateway": self.gateway.gateway_id, "spooled": self.spool.count,
                                                    "waited_s": round(time.monotonic() - self._connected_at, 3)})

    def _confirmed(self, payload: bytes) -> None:
        """Delete the rows a bridge confirmed; remember confirmations that overtook their PUBACK."""
        try:
            doc = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return
        if not isinstance(doc, dict):
            return
        inflight = {(e.row.stream, e.row.seq) for e in self._inflight.values()}
        for stream, runs in doc.items():
            seqs = seqs_of(runs)
            if seqs:
                self._last_confirmed[stream] = max(self._last_confirmed.get(stream, -1), max(seqs))
            for seq in seqs:
                waiting = self._awaiting.pop((stream, seq), None)
                if waiting is not None:
                    self._acked.append(waiting[0])
                elif (stream, seq) in inflight:
                    self._early.add((stream, seq))

    def _find_stale(self) -> None:
        """Queue for resending rows unconfirmed for ``confirm_timeout_s`` that a later confirmation overtook."""
        now = time.monotonic()
        if now < self._next_stale_check or not self._awaiting:
            return
        self._next_stale_check = now + 1.0
        cutoff = now - self.gateway.confirm_timeout_s
        stopping = self._stop.is_set()
        stale = [key for key, (_row_id, acked_at) in self._awaiting.items()
                 if acked_at <= cutoff and (stopping or key[1] < self._last_confirmed.get(key[0], -1))]
        if not stale:
            return
        ids = [self._awaiting.pop(key)[0] for key in stale]
        rows = self.spool.rows(ids)
        self._resend += rows
        for row in rows:
            self.metrics.resent.labels(row.stream).inc()
        log.warning("messages not confirmed in time; sending them again", extra={
            "gateway": self.gateway.gateway_id, "count": len(rows), "first_seq": rows[0].seq if rows else None})

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if self.connected and self.gateway.wait_for_bridge and self.bridge_ready:
            self.bridge_ready = False
            self.metrics.bridge_ready.dec()
        if self.connected:
            self.metrics.connected.dec()
            if not self._closing:
                log.warning("mqtt disconnected", extra={"reason": str(reason), "gateway": self.gateway.gateway_id,
                                                        "inflight": len(self._inflight)})
        self.connected = False
        self._socket_open = False
        self._next_attempt = time.monotonic() + self._backoff.peek()
        self._fresh_client = True

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: Any, props: Any) -> None:
        entry = self._inflight.pop(mid, None)
        if entry is None:
            return
        row = entry.row
        key = (row.stream, row.seq)
        if not self.gateway.confirm or reason.is_failure or key in self._early:
            self._early.discard(key)
            self._acked.append(row.id)
        else:
            self._awaiting[key] = (row.id, time.monotonic())  # deleted when a bridge confirms it
        if reason.is_failure:
            name = "not_authorized" if int(reason.value) == 135 else "refused"
            self.metrics.dropped.labels(name).inc()
            if self._denied_logged < 5 or self._denied_logged % 1000 == 0:
                log.error("broker refused a publish; message dropped (check the broker ACL for this gateway)"
                          if name == "not_authorized" else "broker refused a publish; message dropped",
                          extra={"reason": str(reason), "code": int(reason.value), "topic": row.topic,
                                 "username": self.gateway.username, "seq": row.seq})
            self._denied_logged += 1
            return
        self.metrics.published.labels(row.stream).inc()
        self.metrics.bytes.labels(row.stream).inc(len(row.payload))
        if entry.replay:
            self.metrics.replayed.labels(row.stream).inc()

    # -- loop ------------------------------------------------------------------------------------------------

    def _connect(self) -> None:
        """One (re)connect attempt; failures schedule the next with jittered exponential backoff."""
        self._next_attempt = time.monotonic() + self._backoff.next()
        if self._fresh_client:
            # Unacknowledged rows are still in the spool: feed them again, oldest first. (Reset here, not
            # in the disconnect callback: paho may report the loss from inside a publish in ``_feed``.)
            self.client = self._make_client()
            self._fresh_client = False
            self._inflight.clear()
            self._awaiting.clear()  # the broker may have lost them: they go again with the rest
            self._early.clear()
            self._resend.clear()
            self._cursor = 0
        if self._will is not None and (self._will_needed or self._last_will is None):
            self._last_will = self._will()
            self._will_needed = False
        if self._last_will is not None:
            self.client.will_set(*self._last_will, qos=1, retain=False)
        try:
            self.client.connect(self.mqtt.host, self.mqtt.port, keepalive=self.mqtt.keepalive_s, clean_start=True)
        except OSError as exc:
            self.connack.set()  # no broker to ask: nothing to wait for at start
            self.metrics.connect_failures.labels("unreachable").inc()
            log.warning("mqtt broker unreachable; spooling", extra={"host": self.mqtt.host, "port": self.mqtt.port,
                                                                    "error": str(exc), "retry_s": self._backoff.peek()})
            return
        self._socket_open = True

    def _feed(self) -> None:
        """Hand rows to paho while the in-flight window has room: stale ones again first, then the spool's next."""
        room = self._window - len(self._inflight)
        again, self._resend = self._resend[:room], self._resend[room:]
        for i, row in enumerate(again):
            info = self._publish(row)
            if info.rc == mqtt.MQTT_ERR_QUEUE_SIZE:
                self._resend[:0] = again[i:]
                return
            self._inflight[info.mid] = _InFlight(row, True)
            if info.rc == mqtt.MQTT_ERR_NO_CONN:
                return
        rows = self.spool.after(self._cursor, self._window - len(self._inflight))
        for row in rows:
            if self._max_packet and row.nbytes > self._max_packet:
                self._refuse_too_large(row)
                continue
            info = self._publish(row)
            if info.rc == mqtt.MQTT_ERR_QUEUE_SIZE:
                break
            self._inflight[info.mid] = _InFlight(row, row.id <= self._replay_upto)
            self._cursor = row.id
            if info.rc == mqtt.MQTT_ERR_NO_CONN:
                break

    def _publish(self, row: Spooled) -> mqtt.MQTTMessageInfo:
        props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        if row.properties:
            props.UserProperty = list(row.properties)
        else:
            props.PayloadFormatIndicator = 1
        return self.client.publish(row.topic, row.payload, qos=1, properties=props)

    def _refuse_too_large(self, row: Spooled) -> None:
        """Drop a row the broker announced it would not take (bigger than its maximum packet size)."""
        self._cursor = row.id
        self._acked.append(row.id)
        self.metrics.dropped.labels("too_large").inc()
        log.error("message larger than the broker's maximum packet size; dropped",
                  extra={"gateway": self.gateway.gateway_id, "topic": row.topic, "seq": row.seq,
                         "bytes": row.nbytes, "max_packet_size": self._max_packet})

    def _step(self) -> None:
        if not self._socket_open and time.monotonic() >= self._next_attempt:
            self._connect()
        if self._socket_open:
            rc = self.client.loop(timeout=0.02)
            if rc != mqtt.MQTT_ERR_SUCCESS and self._socket_open:
                self._on_disconnect(self.client, None, None, rc, None)
        else:
            self._stop.wait(0.05)
        if self._acked:
            self.spool.ack(self._acked)
            self._acked.clear()
        if self.connected and self.bridge_ready:
            self._find_stale()
            self._feed()
        elif self.connected and time.monotonic() >= self._next_wait_warning:
            self._next_wait_warning = time.monotonic() + self.gateway.bridge_wait_warn_s
            log.warning("connected, but no bridge announced itself; holding the spool (is a bridge running, and may "
                        "this gateway read the topic?)", extra={"gateway": self.gateway.gateway_id,
                        "topic": self._ready_topic, "spooled": self.spool.count,
                        "waited_s": round(time.monotonic() - self._connected_at, 1)})
        self.metrics.spool_bytes.set(self.spool.bytes)
        self.metrics.spool_messages.set(self.spool.count)
        self.metrics.unconfirmed.set(len(self._awaiting))

    def run(self) -> None:
        """Publish until ``stop`` was called and the spool is empty or the drain time is over."""
        try:
            while True:
                if self._stop.is_set() and (self.spool.count == 0 or time.monotonic() >= self._drain_deadline):
                    break
                try:
                    self._step()
                except Exception:
                    log.exception("publisher step failed", extra={"gateway": self.gateway.gateway_id})
                    self._stop.wait(1.0)
        finally:
            self._closing = True
            if self.connected:
                # 0x04 "Disconnect with Will Message": the broker publishes our 'offline' status.
                self.client.disconnect(ReasonCode(PacketTypes.DISCONNECT, identifier=4))
                self.client.loop(timeout=0.1)
                if self.connected:  # paho did not report the disconnect
                    self._on_disconnect(self.client, None, None, None, None)
            log.info("publisher stopped", extra={"gateway": self.gateway.gateway_id, "left_in_spool": self.spool.count})

    def stop(self, drain_s: float) -> None:
        """Ask ``run`` to finish after publishing what is spooled (at most ``drain_s`` more seconds)."""
        self._drain_deadline = time.monotonic() + drain_s
        self._stop.set()
