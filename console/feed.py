"""The live feed: plate reads, face watchlist hits and alerts from Kafka, newest kept in memory.

One consumer thread reads ``plate.reads``, ``face.matches``, ``alerts`` (from ``feed_backlog`` records
before the end of each partition) and the compacted ``watchlists`` topic (from the beginning). It
assigns partitions itself and never commits: the console is a viewer, every start rebuilds the feed
from Kafka. Items are kept in a bounded ordered map (``feed_size``; the oldest go first), every change
gets a version number, and SSE streams wait for versions newer than the one they sent.

Plate text: plate reads carry only the keyed pseudonym. A plate watchlist alert names its watchlist
entry (``(entry <id>)``) and points at the read (``source_event_id``); the feed links the two, so roles
allowed to see plate text see the registration the entry's owner typed in. Reads that hit no entry
have no plate text anywhere, for anyone.

Records that do not decode are counted (``invalid``) and skipped; the stage that wrote them already
validated them against the same contracts, so this means a version mismatch, not data to dead-letter.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from pydantic import ValidationError

from citystream.console.auth import User
from citystream.processors.watchlists.watchlists import WatchlistEntry
from citystream.processors.watchlists.watchlists import decode as decode_entry
from citystream.retry import Backoff
from citystream.schemas import topics
from citystream.schemas.events import Alert, FaceMatch, PlateRead
from citystream.settings import Settings

log = logging.getLogger(__name__)
ENTRY_IN_MESSAGE = re.compile(r"\(entry ([0-9a-f-]{36})\)")
FEED_TOPICS = (topics.PLATE_READS, topics.FACE_MATCHES, topics.ALERTS)


def remember(table: OrderedDict[Any, str], key: Any, value: str, cap: int) -> None:
    """Set ``table[key]`` as the newest entry, dropping the oldest beyond ``cap``."""
    table[key] = value
    table.move_to_end(key)
    while len(table) > cap:
        table.popitem(last=False)


@dataclass
class FeedItem:
    """One plate read, face hit or alert as the feed holds it."""

    id: str
    kind: str
    at: datetime
    tenant: str
    device_id: str
    district: str
    source_event_id: str | None
    data: dict[str, Any] = field(default_factory=dict)
    version: int = 0


@dataclass
class AlertAction:
    """What operators did with an alert."""

    acked_by: str = ""
    acked_at: datetime | None = None
    closed_by: str = ""
    closed_at: datetime | None = None


class Feed:
    """Feed state (thread-safe); :meth:`ingest` applies one record, :meth:`start` runs the Kafka reader."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.size = settings.console.feed_size
        self.items: OrderedDict[str, FeedItem] = OrderedDict()
        self.entries: dict[str, WatchlistEntry] = {}
        self.actions: dict[str, AlertAction] = {}
        # plate read id -> watchlist entry id (from its alert); (tenant, pseudonym) -> entry id. Both bounded.
        self.read_entry: OrderedDict[str, str] = OrderedDict()
        self.pseudonym_entry: OrderedDict[tuple[str, str], str] = OrderedDict()
        self.invalid = 0
        self.version = 0
        self.lock = threading.Lock()
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.connected = False

    # -- applying records ------------------------------------------------------------------------------------------

    def ingest(self, base_topic: str, key: bytes | None, value: bytes | None) -> None:
        """Apply one Kafka record of ``base_topic`` (topic name without prefix)."""
        try:
            with self.lock:
                changed = self._apply(base_topic, key, value)
        except (ValidationError, ValueError) as exc:
            self.invalid += 1
            log.warning("console feed: record skipped", extra={"topic": base_topic, "error": str(exc)[:300]})
            return
        if changed:
            self._notify()

    def _apply(self, base_topic: str, key: bytes | None, value: bytes | None) -> bool:
        if base_topic == topics.WATCHLISTS:
            entry_id = (key or b"").decode()
            if value is None:
                self.entries.pop(entry_id, None)
            else:
                self.entries[entry_id] = decode_entry(value)
            return False
        if value is None:
            return False
        if base_topic == topics.PLATE_READS:
            self._plate(PlateRead.model_validate_json(value))
        elif base_topic == topics.FACE_MATCHES:
            self._face(FaceMatch.model_validate_json(value))
        elif base_topic == topics.ALERTS:
            self._alert(Alert.model_validate_json(value))
        else:
            return False
        return True

    def _put(self, item: FeedItem) -> None:
        self.version += 1
        item.version = self.version
        self.items[item.id] = item
        self.items.move_to_end(item.id)
        while len(self.items) > self.size:
            self.items.popitem(last=False)

    def _plate(self, read: PlateRead) -> None:
        entry_id = self.read_entry.get(read.event_id)
        if entry_id is not None:  # its alert came first
            remember(self.pseudonym_entry, (read.tenant, read.plate_pseudonym), entry_id, self.size)
        elif read.watchlist_hit:
            entry_id = self.pseudonym_entry.get((read.tenant, read.plate_pseudonym))
        self._put(FeedItem(read.event_id, "plate", read.captured_at, read.tenant, read.device_id, read.district,
                           read.source_event_id, {"pseudonym": read.plate_pseudonym, "confidence": read.confidence,
                                                  "hit": read.watchlist_hit, "entry_id": entry_id}))

    def _face(self, face: FaceMatch) -> None:
        self._put(FeedItem(face.event_id, "face", face.captured_at, face.tenant, face.device_id, face.district,
                           face.source_event_id, {"entry_id": face.watchlist_entry_id,
                                                  "distance": face.distance}))

    def _alert(self, alert: Alert) -> None:
        closed = self.items.get(alert.source_event_id or "")
        if alert.state == "cleared" and closed is not None:
            if closed.kind == "alert":  # closed from the console (its cleared copy points at it)
                action = self.actions.setdefault(closed.id, AlertAction())
                action.closed_at = action.closed_at or alert.captured_at
                action.closed_by = action.closed_by or alert.message.rsplit(": ", 1)[-1][:64]
                self._put(closed)
                return
        match = ENTRY_IN_MESSAGE.search(alert.message)
        entry_id = match.group(1) if match else None
        if alert.alert_type == "plate_watchlist" and entry_id and alert.source_event_id:
            remember(self.read_entry, alert.source_event_id, entry_id, self.size)
            read = self.items.get(alert.source_event_id)
            if read is not None and read.kind == "plate":
                read.data["entry_id"] = entry_id
                remember(self.pseudonym_entry, (read.tenant, read.data["pseudonym"]), entry_id, self.size)
                self._put(read)
        self._put(FeedItem(alert.event_id, "alert", alert.captured_at, alert.tenant, alert.device_id, alert.district,
                           alert.source_event_id, {"alert_type": alert.alert_type, "severity": alert.severity.value,
                                                   "state": alert.state, "message": alert.message,
                                                   "value": alert.value, "threshold": alert.threshold,
                                                   "entry_id": entry_id, "gateway_id": alert.gateway_id,
                                                   "seq": alert.seq}))

    def mark(self, alert_id: str, user: User, action: str, at: datetime | None = None) -> FeedItem:
        """Record an acknowledgement or closure of an alert the feed holds (KeyError when it holds none)."""
        with self.lock:
            item = self.items.get(alert_id)
            if item is None or item.kind != "alert":
                raise KeyError(alert_id)
            state = self.actions.setdefault(alert_id, AlertAction())
            when = at or datetime.now(UTC)
            if action == "ack":
                state.acked_by, state.acked_at = user.name, when
            else:
                state.closed_by, state.closed_at = user.name, when
            self._put(item)
        self._notify()
        return item

    def restore(self, audit_rows: list[dict[str, Any]]) -> int:
        """Acknowledgements and closures from audit log rows, so a restart keeps them; returns how many."""
        restored = 0
        with self.lock:
            for row in audit_rows:
                action, actor = str(row.get("action", "")), str(row.get("actor", ""))
                if action not in ("alert.acknowledge", "alert.close") or not actor.startswith("console:"):
                    continue
                state = self.actions.setdefault(str(row.get("subject", "")), AlertAction())
                raw = row.get("details")
                details: dict[str, Any] = raw if isinstance(raw, dict) else {}
                who, at = str(details.get("name") or actor.removeprefix("console:")), row.get("at")
                if action == "alert.acknowledge" and not state.acked_by:
                    state.acked_by, state.acked_at = who, at
                    restored += 1
                elif action == "alert.close" and not state.closed_by:
                    state.closed_by, state.closed_at = who, at
                    restored += 1
            for alert_id in self.actions:
                if alert_id in self.items:
                    self._put(self.items[alert_id])
        self._notify()
        return restored

    # -- reading ---------------------------------------------------------------------------------------------------

    def changed_since(self, version: int) -> tuple[int, list[FeedItem]]:
        """The current version and the items changed after ``version``, oldest change first."""
        with self.lock:
            items = [item for item in self.items.values() if item.version > version]
            return self.version, items

    def entry(self, entry_id: str | None) -> WatchlistEntry | None:
        """The watchlist entry with this id, if the feed has seen it."""
        return self.entries.get(entry_id) if entry_id else None

    async def wait(self, version: int, timeout_s: float) -> None:
        """Return when the feed moved past ``version`` or after ``timeout_s``."""
        if self.version > version:
            return
        event = asyncio.Event()
        waiter = (asyncio.get_running_loop(), event)
        with self.lock:
            self._waiters.append(waiter)
        try:
            if self.version <= version:
                await asyncio.wait_for(event.wait(), timeout_s)
        except TimeoutError:
            pass
        finally:
            with self.lock:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)

    def _notify(self) -> None:
        with self.lock:
            waiters = list(self._waiters)
        for loop, event in waiters:
            try:
                loop.call_soon_threadsafe(event.set)
            except RuntimeError:  # that loop is closed
                pass

    # -- the Kafka thread ------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the consumer thread."""
        self._thread = threading.Thread(target=self._run, name="console-feed", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the consumer thread and wait for it."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _assignment(self, consumer: Any) -> list[TopicPartition]:
        kafka = self.settings.kafka
        parts: list[TopicPartition] = []
        for base in (topics.WATCHLISTS, *FEED_TOPICS):
            name = kafka.topic(base)
            meta = consumer.list_topics(name, timeout=10).topics[name]
            if meta.error is not None:
                raise RuntimeError(f"topic {name}: {meta.error}")
            for p in meta.partitions:
                if base == topics.WATCHLISTS:
                    parts.append(TopicPartition(name, p, OFFSET_BEGINNING))
                    continue
                low, high = consumer.get_watermark_offsets(TopicPartition(name, p), timeout=10)
                parts.append(TopicPartition(name, p, max(low, high - self.settings.console.feed_backlog)))
        return parts

    def _run(self) -> None:
        prefix = self.settings.kafka.topic_prefix
        bases = {self.settings.kafka.topic(b): b for b in (topics.WATCHLISTS, *FEED_TOPICS)}
        consumer = Consumer({**self.settings.kafka.client_config(), "group.id": f"{prefix}citystream-console",
                             "enable.auto.commit": False, "enable.auto.offset.store": False})
        backoff = Backoff(1.0, 5.0)
        try:
            while not self._stop.is_set():
                try:
                    consumer.assign(self._assignment(consumer))
                    break
                except Exception as exc:  # Kafka not up yet, topics missing: try again
                    log.warning("console feed: cannot assign topics yet", extra={"error": str(exc)[:300]})
                    self._stop.wait(backoff.next())
            self.connected = True
            while not self._stop.is_set():
                for msg in consumer.consume(num_messages=500, timeout=0.5):
                    if msg.error() is not None:
                        log.warning("console feed: consumer error", extra={"error": str(msg.error())})
                        continue
                    self.ingest(bases.get(msg.topic(), ""), msg.key(), msg.value())
        finally:
            consumer.close()
            self.connected = False


def recent(items: list[FeedItem], limit: int) -> list[FeedItem]:
    """The ``limit`` newest items by event time, newest first."""
    return sorted(items, key=lambda i: i.at, reverse=True)[:limit]
