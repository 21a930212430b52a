"""Plate and face watchlists: entries in a compacted Kafka topic, matched by every worker.

Each entry is one record in ``watchlists`` (compacted), key = entry id, value = entry JSON;
removing an entry writes a tombstone (``None`` value), so compaction forgets it. The worker loads
the topic as a Faust GlobalTable (every worker sees every entry); this module holds the entry
contract, the Kafka read/write used by the CLI, and the matching index.

PDPA: an entry records why (``reason``), under which ``legal_basis`` and until when
(``expires_at``); an expired entry stops matching at once, whether or not it was removed. Face
entries carry only the 128-d template of the person on the list, never the photo.
Delivery: the CLI waits for Kafka's acknowledgement of every write (acks=all, idempotent producer).
"""

from __future__ import annotations

import time
import unicodedata
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

import numpy as np
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition
from numpy.typing import NDArray
from pydantic import Field

from citystream.produce import produce_acked
from citystream.schemas.events import ID_NAMESPACE, TENANT, Contract, UtcMs
from citystream.schemas.topics import WATCHLISTS
from citystream.settings import Settings


class WatchlistEntry(Contract):
    """One plate or face on a tenant's watchlist, with its purpose, legal basis and expiry."""

    entry_id: str = Field(pattern=r"^[0-9a-f-]{36}$")
    tenant: str = Field(pattern=TENANT)
    kind: Literal["plate", "face"]
    label: str = Field("", max_length=256, description="what the control room sees, e.g. 'stolen pickup'")
    registration: str = Field("", max_length=16)
    province: str = Field("", max_length=64)
    embedding: tuple[float, ...] | None = Field(None, description="128-d face template (faces only)")
    reason: str = Field(min_length=1, max_length=1024)
    legal_basis: str = Field(min_length=1, max_length=1024)
    expires_at: UtcMs
    created_at: UtcMs
    created_by: str = Field("", max_length=128)

    def active(self, now: datetime) -> bool:
        """True until the expiry time."""
        return now < self.expires_at


def normalise_plate(text: str) -> str:
    """Registration or province in one comparable form: NFC, no whitespace."""
    return "".join(unicodedata.normalize("NFC", text).split())


def plate_entry_id(tenant: str, registration: str, province: str) -> str:
    """Deterministic id, so adding the same plate again updates its entry."""
    return str(uuid.uuid5(ID_NAMESPACE, f"watchlist/{tenant}/plate/{normalise_plate(registration)}/"
                                        f"{normalise_plate(province)}"))


def new_face_entry_id() -> str:
    """A fresh id for a face entry."""
    return str(uuid.uuid4())


def encode(entry: WatchlistEntry) -> bytes:
    """Wire JSON of an entry."""
    return entry.model_dump_json().encode()


def decode(raw: bytes) -> WatchlistEntry:
    """Entry from wire JSON; raises ValidationError."""
    return WatchlistEntry.model_validate_json(raw)


@dataclass
class WatchlistIndex:
    """Active-or-not entries grouped for matching; expiry is checked at match time."""

    plates: dict[tuple[str, str], list[WatchlistEntry]] = field(default_factory=dict)
    faces: dict[str, list[WatchlistEntry]] = field(default_factory=dict)
    invalid: int = 0

    @classmethod
    def build(cls, raw_entries: Iterable[bytes | None]) -> WatchlistIndex:
        """Index from raw values (None = tombstone, undecodable values are counted and skipped)."""
        index = cls()
        for raw in raw_entries:
            if not raw:
                continue
            try:
                entry = decode(raw)
            except ValueError:
                index.invalid += 1
                continue
            if entry.kind == "plate":
                index.plates.setdefault((entry.tenant, normalise_plate(entry.registration)), []).append(entry)
            elif entry.embedding is not None:
                index.faces.setdefault(entry.tenant, []).append(entry)
        return index

    def match_plate(self, tenant: str, registration: str, province: str, now: datetime) -> WatchlistEntry | None:
        """The active entry for this plate (an entry without province matches any province)."""
        for entry in self.plates.get((tenant, normalise_plate(registration)), []):
            same_province = not entry.province or normalise_plate(entry.province) == normalise_plate(province)
            if same_province and entry.active(now):
                return entry
        return None

    def face_templates(self, tenant: str, now: datetime) -> tuple[list[WatchlistEntry], NDArray[np.float32]]:
        """The tenant's active face entries and their templates as a (K, 128) array."""
        entries = [e for e in self.faces.get(tenant, []) if e.active(now)]
        if not entries:
            return [], np.zeros((0, 128), np.float32)
        return entries, np.array([e.embedding for e in entries], dtype=np.float32)


def publish(settings: Settings, entry: WatchlistEntry) -> None:
    """Write (or replace) an entry; returns once Kafka acknowledged it."""
    produce_acked(settings, WATCHLISTS, entry.entry_id, encode(entry))


def remove(settings: Settings, entry_id: str) -> None:
    """Write a tombstone for an entry; returns once Kafka acknowledged it."""
    produce_acked(settings, WATCHLISTS, entry_id, None)


def read_all(settings: Settings, timeout_s: float = 30.0) -> dict[str, bytes]:
    """Current raw value of every entry (latest per key, tombstones applied), read up to the end."""
    topic = settings.kafka.topic(WATCHLISTS)
    consumer = Consumer({**settings.kafka.client_config(), "group.id": "citystream-watchlist-cli",
                         "enable.auto.commit": False, "enable.partition.eof": True})
    try:
        meta = consumer.list_topics(topic, timeout=timeout_s).topics[topic]
        if meta.error is not None:
            raise RuntimeError(f"cannot read {topic}: {meta.error}")
        parts = [TopicPartition(topic, p, OFFSET_BEGINNING) for p in meta.partitions]
        ends = {p.partition: consumer.get_watermark_offsets(p, timeout=timeout_s)[1] for p in parts}
        pending = {p for p, end in ends.items() if end > 0}
        consumer.assign(parts)
        current: dict[str, bytes] = {}
        deadline = time.monotonic() + timeout_s
        while pending and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error() is not None:
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    pending.discard(msg.partition())
                continue
            key = (msg.key() or b"").decode()
            if msg.value() is None:
                current.pop(key, None)
            else:
                current[key] = msg.value()
            if msg.offset() + 1 >= ends[msg.partition()]:
                pending.discard(msg.partition())
        if pending:
            raise RuntimeError(f"timed out reading {topic}")
        return current
    finally:
        consumer.close()


def active_entries(raw: Mapping[str, bytes], now: datetime) -> list[WatchlistEntry]:
    """Decoded entries that have not expired, sorted by tenant, kind and creation time."""
    index = WatchlistIndex.build(raw.values())
    entries = [e for group in (*index.plates.values(), *index.faces.values()) for e in group if e.active(now)]
    return sorted(entries, key=lambda e: (e.tenant, e.kind, e.created_at))
