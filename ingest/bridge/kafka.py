"""Producer side of the bridge: two idempotent confluent-kafka producers.

JSON records (readings, statuses, dead letters) go through a producer with compression
(``bridge.compression``); JPEG frames through one without (JPEG does not compress, it only costs
CPU). Both use ``enable.idempotence=true`` and ``acks=all``, so librdkafka's own retries never
duplicate or reorder within a partition; ``message.timeout.ms`` bounds each attempt and the bridge
re-produces a record whose attempt failed with a retryable error. Delivery reports run inside
``poll()``, which only the bridge loop thread calls.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from citystream.settings.bridge import BridgeSettings
from citystream.settings.connections import KafkaSettings

log = logging.getLogger(__name__)

DeliveryCallback = Callable[[KafkaError | None, Message], None]
PERMANENT = frozenset({KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.INVALID_MSG_SIZE, KafkaError.RECORD_LIST_TOO_LARGE,
                       KafkaError.INVALID_RECORD, KafkaError.INVALID_MSG, KafkaError._INVALID_ARG})
MAX_REQUEST_BYTES = 16 * 1024 * 1024
QUEUE_HEADROOM = 10_000


class FatalKafkaError(Exception):
    """The producer reported a fatal error (e.g. idempotence state lost); the process must restart."""


def is_permanent(err: KafkaError) -> bool:
    """True when re-producing the same record can never succeed (it is too large or invalid)."""
    return err.code() in PERMANENT


def producer_config(kafka: KafkaSettings, bridge: BridgeSettings, client_id: str, compression: str,
                    batch_bytes: int) -> dict[str, Any]:
    """librdkafka settings of one bridge producer."""
    return {
        **kafka.client_config(),
        "client.id": client_id,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": bridge.linger_ms,
        "compression.type": compression,
        "batch.size": batch_bytes,
        "message.timeout.ms": bridge.delivery_timeout_ms,
        "message.max.bytes": MAX_REQUEST_BYTES,
        "queue.buffering.max.messages": bridge.max_inflight + QUEUE_HEADROOM,
        "queue.buffering.max.kbytes": max(bridge.max_inflight_bytes * 2 // 1024, 65536),
    }


class KafkaOut:
    """The bridge's producers; ``produce`` picks one by payload kind."""

    def __init__(self, kafka: KafkaSettings, bridge: BridgeSettings, client_id: str) -> None:
        """Create both producers (no network I/O until the first produce)."""
        self.fatal: KafkaError | None = None
        common = {"error_cb": self._on_error}
        self.json = Producer({**producer_config(kafka, bridge, f"{client_id}-json", bridge.compression, 1_000_000),
                              **common})
        frame_batch = max(1_000_000, min(4 * 1024 * 1024, bridge.max_frame_bytes))
        self.frames = Producer({**producer_config(kafka, bridge, f"{client_id}-frames", "none", frame_batch), **common})

    def _on_error(self, err: KafkaError) -> None:
        if err.fatal():
            self.fatal = err
            log.error("kafka producer fatal error", extra={"error": err.str()})
        else:
            log.warning("kafka producer error", extra={"error": err.str(), "code": err.name()})

    def produce(self, topic: str, value: bytes, key: str | bytes | None, headers: list[tuple[str, Any]] | None,
                callback: DeliveryCallback, frame: bool = False) -> None:
        """Queue one record; while librdkafka's queue is full, serve delivery reports and try again."""
        producer = self.frames if frame else self.json
        while True:
            try:
                producer.produce(topic, value, key, headers=headers, on_delivery=callback)
                return
            except BufferError:
                self.poll(0.05)
                if self.fatal is not None:
                    raise FatalKafkaError(self.fatal.str()) from None

    def poll(self, timeout: float = 0.0) -> int:
        """Serve delivery reports of both producers; returns how many were served."""
        served: int = self.frames.poll(0) + self.json.poll(timeout)
        if self.fatal is not None:
            raise FatalKafkaError(self.fatal.str())
        return served

    def pending(self) -> int:
        """Records queued or in flight in both producers."""
        return len(self.json) + len(self.frames)
