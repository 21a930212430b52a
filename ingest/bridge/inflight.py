"""The bridge's bounded in-flight window: MQTT messages taken but not yet confirmed by Kafka.

A slot opens when a message is read from MQTT and closes when Kafka's delivery report for its
record (or its dead letter) succeeded; closing queues the MQTT ack. While the window is full (count
or bytes) the bridge stops reading from MQTT, so memory stays bounded and Mosquitto keeps the rest.

Each MQTT connection is a generation: a slot opened on an older connection is never acked on a
newer one (the broker redelivers it; a duplicate in Kafka, removed downstream by ``event_id``).
Single-threaded by design: only the bridge loop thread touches it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class Slot:
    """One message in flight: its MQTT packet id, QoS, size and connection generation."""

    mid: int
    qos: int
    size: int
    generation: int


class InflightWindow:
    """Counts messages and bytes in flight; collects the MQTT acks that became due."""

    def __init__(self, max_messages: int, max_bytes: int) -> None:
        """A window of at most ``max_messages`` messages and (about) ``max_bytes`` bytes."""
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self.count = 0
        self.bytes = 0
        self.generation = 0
        self._acks: list[tuple[int, int]] = []

    def full(self) -> bool:
        """True when no new message may be read (one message is always allowed into an empty window)."""
        return self.count >= self.max_messages or (self.count > 0 and self.bytes >= self.max_bytes)

    def open(self, mid: int, qos: int, size: int) -> Slot:
        """Take a slot for a message just read on the current connection."""
        self.count += 1
        self.bytes += size
        return Slot(mid, qos, size, self.generation)

    def close(self, slot: Slot) -> bool:
        """Release a slot whose data Kafka confirmed; True when its MQTT ack is due on this connection."""
        self.count -= 1
        self.bytes -= slot.size
        if slot.qos > 0 and slot.generation == self.generation:
            self._acks.append((slot.mid, slot.qos))
            return True
        return False

    def new_generation(self) -> None:
        """The MQTT connection was lost: pending and future acks of older slots are dropped."""
        self.generation += 1
        self._acks.clear()

    def take_acks(self) -> list[tuple[int, int]]:
        """The (mid, qos) pairs to ack now, in delivery order."""
        acks, self._acks = self._acks, []
        return acks
