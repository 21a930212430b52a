"""Sink metrics (``citystream_sink_*``); labels are table, topic, partition and reason (all bounded)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class SinkMetrics:
    """The sink's collectors, registered on the given registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
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
        self.pending = Gauge("citystream_sink_window_rows", "Rows consumed into the open window, not yet inserted",
                             registry=registry)
        self.windows = Counter("citystream_sink_windows_committed_total", "Batch windows inserted and committed",
                               registry=registry)
        self.commit_failures = Counter("citystream_sink_commit_failures_total",
                                       "Windows stored but whose offset commit failed (re-read later, deduplicated)",
                                       registry=registry)
        self.frames = Counter("citystream_sink_frames_total", "Camera frames decided by the claim-check archiver",
                              ["outcome"], registry=registry)
        self.replayed = Counter("citystream_sink_windows_replayed_total",
                                "Windows rebuilt from the write-ahead log after a crash", registry=registry)
        self.ready = Gauge("citystream_sink_ready", "1 while the sink holds a group assignment (possibly empty)",
                           registry=registry)
