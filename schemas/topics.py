"""The topic map: MQTT topics, Kafka topics, keys, partitions and retention, in one place.

MQTT (gateway -> broker), QoS 1, MQTT v5::

    {root}/{tenant}/{gateway}/sensor/{device}/reading   JSON SensorReading
    {root}/{tenant}/{gateway}/camera/{device}/frame     JPEG bytes; FrameMeta fields in user properties
    {root}/{tenant}/{gateway}/gateway/{gateway}/status  JSON DeviceStatus (heartbeat, last-will)

``root`` is ``mqtt.topic_root`` (default ``city``). The bridge subscribes with a shared
subscription ``$share/{group}/{root}/#``: everything under the root reaches it, so a topic outside
the map becomes a dead letter (``unknown_topic``) instead of being acknowledged and dropped by the
broker for want of a subscriber; the bridges' own ``{root}/_bridge/…`` messages are skipped.

Bridge readiness and confirmations (bridge -> gateways), QoS 0, not retained::

    {root}/_bridge/ready                                JSON {"client_id", "share_group"}, every second
    {root}/_bridge/confirm/{tenant}/{gateway}           JSON {stream: [[first_seq, last_seq], ...]}

A bridge publishes it only while its subscription is in place; a gateway publishes nothing on a
connection before it has seen one (see ``ingest/gateway/publisher.py``: the broker would PUBACK and drop
messages that arrive before any subscription exists, e.g. after a broker restart). A confirmation
says Kafka has those seqs (or their dead letters); only then does a gateway delete them from its spool.

Kafka: every record is keyed by ``device_id`` so one device's events stay in order in one
partition. ``kafka.topic_prefix`` is prepended to every name (tests, several cities on one cluster).
"""

from __future__ import annotations

from dataclasses import dataclass

DAY_MS = 86_400_000


@dataclass(frozen=True)
class TopicSpec:
    """One Kafka topic: name, partitions, retention, cleanup policy and max message size."""

    name: str
    partitions: int
    retention_ms: int
    compacted: bool = False
    max_message_bytes: int = 1_048_576
    purpose: str = ""

    def config(self) -> dict[str, str]:
        """Topic-level configuration for CreateTopics."""
        conf = {
            "retention.ms": str(self.retention_ms),
            "cleanup.policy": "compact" if self.compacted else "delete",
            "max.message.bytes": str(self.max_message_bytes),
        }
        return conf


FRAME_MAX_BYTES = 4 * 1024 * 1024

RAW_READINGS = "raw.readings"
RAW_FRAMES = "raw.frames"
DEVICE_STATUS = "device.status"
PLATE_READS = "plate.reads"
FACE_MATCHES = "face.matches"
ALERTS = "alerts"
WATCHLISTS = "watchlists"
DLQ = "dlq"

TOPICS: tuple[TopicSpec, ...] = (
    TopicSpec(RAW_READINGS, 6, 7 * DAY_MS, purpose="SensorReading JSON from the bridge"),
    TopicSpec(RAW_FRAMES, 6, 1 * DAY_MS, max_message_bytes=FRAME_MAX_BYTES + 65536,
              purpose="JPEG bytes, FrameMeta in headers; short retention (images are personal data)"),
    TopicSpec(DEVICE_STATUS, 3, 7 * DAY_MS, purpose="DeviceStatus JSON: heartbeats, last-will, gaps"),
    TopicSpec(PLATE_READS, 6, 7 * DAY_MS, purpose="PlateRead JSON from the worker"),
    TopicSpec(FACE_MATCHES, 3, 7 * DAY_MS, purpose="FaceMatch JSON (watchlist hits only)"),
    TopicSpec(ALERTS, 3, 30 * DAY_MS, purpose="Alert JSON"),
    TopicSpec(WATCHLISTS, 1, -1, compacted=True, purpose="watchlist entries keyed by entry id (compacted)"),
    TopicSpec(DLQ, 3, 30 * DAY_MS, max_message_bytes=FRAME_MAX_BYTES * 2, purpose="DeadLetter JSON"),
)


def topic_name(prefix: str, base: str) -> str:
    """The Kafka topic name with the configured prefix."""
    return f"{prefix}{base}"


def mqtt_topic(root: str, tenant: str, gateway: str, family: str, device: str, stream: str) -> str:
    """MQTT topic of one device stream."""
    return f"{root}/{tenant}/{gateway}/{family}/{device}/{stream}"


def mqtt_subscription(root: str, share_group: str | None = None) -> str:
    """Filter matching everything under the root, optionally as an MQTT v5 shared subscription."""
    flt = f"{root}/#"
    return f"$share/{share_group}/{flt}" if share_group else flt


def is_bridge_control(topic: str, root: str) -> bool:
    """Whether ``topic`` is one of the bridges' own announcements or confirmations (not device data)."""
    return topic.startswith(f"{root}/_bridge/")


def bridge_ready_topic(root: str) -> str:
    """Topic on which running bridges announce that their subscription is in place."""
    return f"{root}/_bridge/ready"


def bridge_confirm_topic(root: str, tenant: str, gateway: str) -> str:
    """Topic on which bridges confirm to one gateway the seqs Kafka has."""
    return f"{root}/_bridge/confirm/{tenant}/{gateway}"


@dataclass(frozen=True)
class MqttAddress:
    """The parts of a device topic."""

    tenant: str
    gateway: str
    family: str
    device: str
    stream: str


FAMILY_STREAMS = {("sensor", "reading"), ("camera", "frame"), ("gateway", "status")}


def parse_mqtt_topic(topic: str, root: str) -> MqttAddress | None:
    """Split a device topic; None when it does not follow the map."""
    parts = topic.split("/")
    if len(parts) != 6 or parts[0] != root or not all(parts):
        return None
    addr = MqttAddress(*parts[1:])
    if (addr.family, addr.stream) not in FAMILY_STREAMS:
        return None
    return addr


KAFKA_TOPIC_OF_STREAM = {"reading": RAW_READINGS, "frame": RAW_FRAMES, "status": DEVICE_STATUS}
