"""Prometheus metrics of the bridge; labels are bounded (stream, reason, outcome), never per device.

The per-message counters (received, produced) are tallied in plain dicts on the hot path and added
to Prometheus by ``flush()``, which the bridge loop calls on every turn (and at shutdown).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

from citystream.ingest.bridge.validate import REASONS

STREAMS = ("reading", "frame", "status", "unknown")
DLQ_REASONS = (*REASONS, "kafka_rejected")


class BridgeMetrics:
    """All bridge collectors, registered in the given registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        """Create and pre-label the collectors (so every series exists from the start)."""
        self.received = Counter("citystream_bridge_received_total", "MQTT messages read", ["stream"], registry=registry)
        self.produced = Counter("citystream_bridge_produced_total", "records Kafka confirmed (incl. DLQ)", ["stream"],
                                registry=registry)
        self.acked = Counter("citystream_bridge_acked_total", "MQTT PUBACKs sent after Kafka confirmed",
                             registry=registry)
        self.dlq = Counter("citystream_bridge_dlq_total", "messages sent to the DLQ", ["reason"], registry=registry)
        self.retries = Counter("citystream_bridge_produce_retries_total", "records re-produced after a failed delivery",
                               registry=registry)
        self.inflight = Gauge("citystream_bridge_inflight_messages", "messages read but not yet acked",
                              registry=registry)
        self.inflight_bytes = Gauge("citystream_bridge_inflight_bytes", "payload bytes in flight", registry=registry)
        self.blocked = Counter("citystream_bridge_blocked_seconds_total", "time reading was paused (window full)",
                               registry=registry)
        self.gaps = Counter("citystream_bridge_seq_gaps_total", "sequence gaps seen", ["stream"], registry=registry)
        self.missing = Counter("citystream_bridge_seq_missing_total", "sequence numbers skipped by gaps", ["stream"],
                               registry=registry)
        self.late = Counter("citystream_bridge_seq_late_total", "messages that filled an earlier gap", ["stream"],
                            registry=registry)
        self.duplicates = Counter("citystream_bridge_seq_duplicates_total", "sequence numbers seen again", ["stream"],
                                  registry=registry)
        self.reconnects = Counter("citystream_bridge_mqtt_reconnects_total", "MQTT connections lost", registry=registry)
        self.subscribed = Gauge("citystream_bridge_mqtt_subscribed", "1 once the broker acked the shared subscription "
                                "on the current connection (readiness)", registry=registry)
        for stream in STREAMS:
            for counter in (self.received, self.produced, self.gaps, self.missing, self.late, self.duplicates):
                counter.labels(stream)
        for reason in DLQ_REASONS:
            self.dlq.labels(reason)
        self.received_due: dict[str, int] = dict.fromkeys(STREAMS, 0)
        self.produced_due: dict[str, int] = {}

    def flush(self) -> None:
        """Add the tallied received/produced counts to their counters."""
        for due, counter in ((self.received_due, self.received), (self.produced_due, self.produced)):
            for label, n in due.items():
                if n:
                    counter.labels(label).inc(n)
                    due[label] = 0
