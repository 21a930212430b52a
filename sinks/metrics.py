"""Sink metrics (``citystream_sink_*``); labels are table, topic, partition and reason (all bounded)."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

# The sink's dead-letter reasons (sinks/rows.py PoisonRecord, sinks/clickhouse.py), pre-labelled at zero.
SINK_DLQ_REASONS = ("empty_record", "not_json", "schema_mismatch", "value_out_of_range", "unstorable_dead_letter")
E2E_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0)


class BlockLatency(Collector):
    """``citystream_sink_e2e_latency_seconds{table}``: capture at the gateway -> row inserted, per row.

    Observed a whole Arrow block at a time (prometheus-client's Histogram takes one value per call,
    too slow for 50 000-row blocks). A window inserted again after a crash is observed again.
    """

    name = "citystream_sink_e2e_latency_seconds"

    def __init__(self, registry: CollectorRegistry) -> None:
        self._counts: dict[str, np.ndarray] = {}
        self._sums: dict[str, float] = {}
        self._edges = np.array([*E2E_BUCKETS, np.inf])
        registry.register(self)

    def observe_block(self, table: str, block: pa.Table, inserted_at_ms: int) -> None:
        """Add every row's ``inserted_at - captured_at`` of ``block`` (no-op without a captured_at column)."""
        if "captured_at" not in block.column_names or block.num_rows == 0:
            return
        captured = pc.cast(block.column("captured_at"), pa.int64()).to_numpy(zero_copy_only=False)
        seconds = (inserted_at_ms - captured) / 1000.0
        index = np.searchsorted(self._edges, seconds, side="left")
        counts = np.bincount(index, minlength=len(self._edges))[: len(self._edges)]
        self._counts[table] = self._counts.get(table, np.zeros(len(self._edges), np.int64)) + counts
        self._sums[table] = self._sums.get(table, 0.0) + float(seconds.sum())

    def collect(self) -> Iterable[Metric]:
        """The histogram family, one series per table."""
        family = HistogramMetricFamily(self.name, "Gateway capture to row inserted in ClickHouse, per row",
                                       labels=["table"])
        for table, counts in sorted(self._counts.items()):
            cumulative = np.cumsum(counts)
            buckets = [(str(edge) if np.isfinite(edge) else "+Inf", float(c))
                       for edge, c in zip(self._edges, cumulative, strict=True)]
            family.add_metric([table], buckets, self._sums[table])
        yield family

    def describe(self) -> Iterable[Metric]:
        """Declare the family without samples (registration checks names)."""
        yield HistogramMetricFamily(self.name, "Gateway capture to row inserted in ClickHouse, per row",
                                    labels=["table"])


class SinkMetrics:
    """The sink's collectors, registered on the given registry."""

    def __init__(self, registry: CollectorRegistry, tables: Iterable[str] = ()) -> None:
        self.e2e = BlockLatency(registry)
        self.rows = Counter("citystream_sink_rows_inserted_total", "Rows inserted into ClickHouse", ["table"],
                            registry=registry)
        self.insert_seconds = Histogram("citystream_sink_insert_seconds", "Time of one insert_arrow call", ["table"],
                                        registry=registry, buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10))
        self.batch_rows = Histogram("citystream_sink_batch_rows", "Rows per insert block", ["table"], registry=registry,
                                    buckets=(1, 10, 100, 1_000, 5_000, 10_000, 50_000, 100_000, 500_000))
        self.lag = Gauge("citystream_sink_consumer_lag_messages", "High watermark minus committed offset",
                         ["topic", "partition"], registry=registry)
        self.retries = Counter("citystream_sink_insert_retries_total", "Insert attempts that failed and were retried",
                               ["table"], registry=registry)
        self.dlq = Counter("citystream_sink_dlq_total", "Records sent to the DLQ by the sink", ["reason"],
                           registry=registry)
        for reason in SINK_DLQ_REASONS:  # zero series from the start, so rules and panels see them
            self.dlq.labels(reason)
        for table in tables:
            self.rows.labels(table)
            self.retries.labels(table)
        self.pending = Gauge("citystream_sink_window_rows", "Rows consumed into the open window, not yet inserted",
                             registry=registry)
        self.windows = Counter("citystream_sink_windows_committed_total", "Batch windows inserted and committed",
                               registry=registry)
        self.commit_failures = Counter("citystream_sink_commit_failures_total",
                                       "Windows stored but whose offset commit failed (re-read later, deduplicated)",
                                       registry=registry)
        self.frames = Counter("citystream_sink_frames_total", "Camera frames decided by the claim-check archiver",
                              ["outcome"], registry=registry)
        for outcome in ("stored", "no_detection", "invalid", "index_refused"):
            self.frames.labels(outcome)
        self.replayed = Counter("citystream_sink_windows_replayed_total",
                                "Windows rebuilt from the write-ahead log after a crash", registry=registry)
        self.ready = Gauge("citystream_sink_ready", "1 while the sink holds a group assignment (possibly empty)",
                           registry=registry)
