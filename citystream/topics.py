"""Topic admin: the one place that creates and updates Kafka topics (``citystream topics apply``).

The wanted state is the topic map (``schemas/topics.py``: names, partitions, retention, compaction,
``max.message.bytes``) with ``kafka.topic_prefix``, ``kafka.replication_factor``,
``kafka.min_insync_replicas`` and per-topic ``kafka.topics`` overrides from settings, plus any extra
topics a caller owns (the worker's Faust internal topics). ``apply`` compares it with the cluster:

- a missing topic is created (replication factor checked against the broker count first);
- an existing one gets more partitions when settings ask for more, and its differing topic configs
  set (incremental AlterConfigs);
- what cannot be changed in place is reported as a note and left alone: fewer partitions than the
  topic has (Kafka cannot shrink), or a different replication factor (needs a partition reassignment).

Topics that can hold camera images (``raw.frames``, and ``dlq``, where a rejected frame travels whole)
keep them no longer than images are kept: the ``dlq`` retention is capped at the ``raw.frames``
retention and at ``retention.dead_letter_image_days`` (an override asking for more is lowered, with a
warning), and both get a ``segment.ms`` of at most an hour (Kafka deletes whole closed segments only: with
its 7-day default a quiet topic would keep a record a week past its retention).

Running it again changes nothing (idempotent); ``dry_run`` only reports. Callers: the CLI (Helm
pre-install/pre-upgrade Job, compose ``topics`` service), the local stack (``stack up``) and the
worker before it joins its group.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewPartitions,
    NewTopic,
    ResourceType,
)

from citystream.schemas.topics import DLQ, RAW_FRAMES, TOPICS
from citystream.settings import Settings

log = logging.getLogger(__name__)

DAY_MS = 86_400_000
IMAGE_SEGMENT_MS = 3_600_000
"""``segment.ms`` cap of the topics that hold images: a record outlives the retention by at most this."""


class TopicError(RuntimeError):
    """The cluster could not be read or a topic could not be created or updated; the message says which."""


@dataclass(frozen=True)
class WantedTopic:
    """One topic as it should be: full name, partitions, replication factor and topic configs."""

    name: str
    partitions: int
    replication_factor: int
    config: dict[str, str]


@dataclass
class TopicChange:
    """What ``apply`` did (or, dry, would do) to one topic."""

    topic: str
    actions: list[str] = field(default_factory=list)  # create, add_partitions, alter_config
    partitions: tuple[int | None, int] = (None, 0)  # (current, wanted)
    replication_factor: tuple[int | None, int] = (None, 0)
    config: dict[str, tuple[str | None, str]] = field(default_factory=dict)  # key -> (current, wanted)
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form (``topics apply --json``)."""
        return {"topic": self.topic, "actions": self.actions,
                "partitions": {"current": self.partitions[0], "wanted": self.partitions[1]},
                "replication_factor": {"current": self.replication_factor[0], "wanted": self.replication_factor[1]},
                "config": {k: {"current": c, "wanted": w} for k, (c, w) in self.config.items()},
                "notes": self.notes}


@dataclass
class Report:
    """The outcome of one ``apply``: every wanted topic, in topic-map order."""

    dry_run: bool
    brokers: int
    changes: list[TopicChange]

    @property
    def created(self) -> list[str]:
        """Names of the topics created (or that would be)."""
        return [c.topic for c in self.changes if "create" in c.actions]

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form (``topics apply --json``)."""
        return {"dry_run": self.dry_run, "brokers": self.brokers, "topics": [c.as_dict() for c in self.changes],
                "changed": sum(1 for c in self.changes if c.actions)}


def wanted_topics(settings: Settings) -> list[WantedTopic]:
    """The topic map as this cluster should have it (prefix, replication and overrides from settings)."""
    k = settings.kafka
    wanted = []
    for spec in TOPICS:
        over = k.topics.get(spec.name)
        config = spec.config()
        if over is not None and over.retention_ms is not None:
            config["retention.ms"] = str(over.retention_ms)
        if over is not None and over.max_message_bytes is not None:
            config["max.message.bytes"] = str(over.max_message_bytes)
        if k.min_insync_replicas is not None:
            config["min.insync.replicas"] = str(k.min_insync_replicas)
        partitions = over.partitions if over is not None and over.partitions is not None else spec.partitions
        wanted.append(WantedTopic(k.topic(spec.name), partitions, k.replication_factor, config))
    _cap_image_topics(settings, {spec.name: topic for spec, topic in zip(TOPICS, wanted, strict=True)})
    return wanted


def image_retention_ms(settings: Settings, frames_ms: int) -> int:
    """The longest a topic may keep a camera image: the ``raw.frames`` retention and the dead-letter image days."""
    limit = settings.retention.dead_letter_image_days * DAY_MS
    return limit if frames_ms < 0 else min(frames_ms, limit)


def _cap_image_topics(settings: Settings, by_spec: dict[str, WantedTopic]) -> None:
    """Keep dead-lettered frames in ``dlq`` no longer than raw frames; short segments on both image topics."""
    frames, dlq = by_spec[RAW_FRAMES], by_spec[DLQ]
    limit = image_retention_ms(settings, int(frames.config["retention.ms"]))
    asked = int(dlq.config["retention.ms"])
    if asked < 0 or asked > limit:
        if settings.kafka.topics.get(DLQ) is not None and settings.kafka.topics[DLQ].retention_ms is not None:
            log.warning("dlq retention lowered: it carries rejected frames whole, which may be kept no longer "
                        "than raw frames and dead-letter images",
                        extra={"asked_ms": asked, "retention_ms": limit})
        dlq.config["retention.ms"] = str(limit)
    for topic in (frames, dlq):
        retention = int(topic.config["retention.ms"])
        segment = IMAGE_SEGMENT_MS if retention < 0 else max(60_000, min(IMAGE_SEGMENT_MS, retention))
        topic.config["segment.ms"] = str(segment)


def extra_topic(settings: Settings, name: str, partitions: int, config: dict[str, str]) -> WantedTopic:
    """A topic outside the topic map (e.g. a Faust changelog) with this cluster's replication settings."""
    conf = dict(config)
    if settings.kafka.min_insync_replicas is not None:
        conf.setdefault("min.insync.replicas", str(settings.kafka.min_insync_replicas))
    return WantedTopic(name, partitions, settings.kafka.replication_factor, conf)


def admin_client(settings: Settings) -> AdminClient:
    """An admin client for the configured cluster."""
    return AdminClient({**settings.kafka.client_config(), "socket.timeout.ms": 5000})


def _results(futures: dict[Any, Any], what: str, timeout_s: float, ignore: str = "") -> None:
    for key, future in futures.items():
        try:
            future.result(timeout=timeout_s)
        except KafkaException as exc:
            if ignore and ignore in str(exc):
                continue
            name = getattr(key, "name", key)
            raise TopicError(f"cannot {what} {name}: {exc}") from exc


def _current_configs(client: AdminClient, names: Sequence[str], timeout_s: float) -> dict[str, dict[str, str]]:
    if not names:
        return {}
    resources = [ConfigResource(ResourceType.TOPIC, name) for name in names]
    out: dict[str, dict[str, str]] = {}
    for resource, future in client.describe_configs(resources, request_timeout=timeout_s).items():
        try:
            entries = future.result(timeout=timeout_s)
        except KafkaException as exc:
            raise TopicError(f"cannot read the configs of {resource.name}: {exc}") from exc
        out[resource.name] = {key: entry.value for key, entry in entries.items()}
    return out


def plan(client: AdminClient, wanted: Sequence[WantedTopic], timeout_s: float) -> tuple[int, list[TopicChange]]:
    """Compare the wanted topics with the cluster; returns the broker count and one change per topic."""
    try:
        md = client.list_topics(timeout=timeout_s)
    except KafkaException as exc:
        raise TopicError(f"cannot read the cluster metadata: {exc}") from exc
    brokers = len(md.brokers)
    existing = {w.name: md.topics[w.name] for w in wanted if w.name in md.topics and md.topics[w.name].error is None}
    configs = _current_configs(client, list(existing), timeout_s)
    changes = []
    for w in wanted:
        change = TopicChange(w.name, partitions=(None, w.partitions), replication_factor=(None, w.replication_factor))
        meta = existing.get(w.name)
        if meta is None:
            if w.replication_factor > brokers:
                raise TopicError(f"{w.name}: replication factor {w.replication_factor} needs at least that many "
                                 f"brokers; the cluster has {brokers} (set kafka.replication_factor)")
            change.actions.append("create")
            change.config = {k: (None, v) for k, v in w.config.items()}
            changes.append(change)
            continue
        have_parts = len(meta.partitions)
        have_rf = min((len(p.replicas) for p in meta.partitions.values()), default=0)
        change.partitions, change.replication_factor = (have_parts, w.partitions), (have_rf, w.replication_factor)
        if w.partitions > have_parts:
            change.actions.append("add_partitions")
            change.notes.append("more partitions move keys to other partitions: per-device order holds "
                                "only for records produced after the change")
        elif w.partitions < have_parts:
            change.notes.append(f"has {have_parts} partitions, settings ask for {w.partitions}: "
                                "kept (Kafka cannot remove partitions)")
        if have_rf != w.replication_factor:
            change.notes.append(f"replication factor is {have_rf}, settings ask for {w.replication_factor}: "
                                "not changed (needs a partition reassignment, kafka-reassign-partitions)")
        current = configs.get(w.name, {})
        change.config = {k: (current.get(k), v) for k, v in w.config.items() if current.get(k) != v}
        if change.config:
            change.actions.append("alter_config")
        changes.append(change)
    return brokers, changes


def _execute(client: AdminClient, wanted: dict[str, WantedTopic], changes: Iterable[TopicChange],
             timeout_s: float) -> None:
    changes = list(changes)
    create = [NewTopic(c.topic, num_partitions=wanted[c.topic].partitions,
                       replication_factor=wanted[c.topic].replication_factor, config=wanted[c.topic].config)
              for c in changes if "create" in c.actions]
    grow = [NewPartitions(c.topic, wanted[c.topic].partitions) for c in changes if "add_partitions" in c.actions]
    alter = [ConfigResource(ResourceType.TOPIC, c.topic, incremental_configs=[
                 ConfigEntry(k, w, incremental_operation=AlterConfigOpType.SET) for k, (_cur, w) in c.config.items()])
             for c in changes if "alter_config" in c.actions]
    if create:  # a concurrent creator (another worker, the Helm Job) may win the race: that is fine
        _results(client.create_topics(create, request_timeout=timeout_s), "create topic", timeout_s,
                 ignore="TOPIC_ALREADY_EXISTS")
    if grow:
        _results(client.create_partitions(grow, request_timeout=timeout_s), "add partitions to", timeout_s)
    if alter:
        _results(client.incremental_alter_configs(alter, request_timeout=timeout_s), "update the configs of",
                 timeout_s)
    for c in changes:
        if c.actions:
            log.info("topic updated", extra={"topic": c.topic, "actions": ",".join(c.actions)})


def wait_visible(client: AdminClient, wanted: Sequence[WantedTopic], timeout_s: float) -> None:
    """Block until the cluster metadata shows every wanted topic with at least its partitions."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            topics = client.list_topics(timeout=timeout_s).topics
        except KafkaException as exc:
            raise TopicError(f"cannot read the cluster metadata: {exc}") from exc
        absent = [w.name for w in wanted if w.name not in topics or len(topics[w.name].partitions) < w.partitions]
        if not absent:
            return
        if time.monotonic() > deadline:
            raise TopicError(f"topics not visible in the cluster metadata after {timeout_s} s: {absent}")
        time.sleep(0.2)


def apply(settings: Settings, extra: Sequence[WantedTopic] = (), *, dry_run: bool = False,
          timeout_s: float = 30.0, client: AdminClient | None = None) -> Report:
    """Create or update the topic map's topics (and ``extra``) to match settings; ``dry_run`` only reports."""
    client = client or admin_client(settings)
    wanted = [*wanted_topics(settings), *extra]
    brokers, changes = plan(client, wanted, timeout_s)
    if not dry_run:
        _execute(client, {w.name: w for w in wanted}, changes, timeout_s)
        wait_visible(client, wanted, timeout_s)
    return Report(dry_run, brokers, changes)
