"""Prometheus metrics of the stage runtime, labelled by stage.

Metric objects are module-level because a Prometheus registry holds each name once per
process; :class:`StageMetrics` binds the ``stage`` label so the runner never repeats it.
"""

from __future__ import annotations

import contextlib

from prometheus_client import Counter, Gauge, Histogram, start_http_server

CONSUMED = Counter("labelflow_records_consumed", "Input records handled", ["stage"])
PRODUCED = Counter("labelflow_records_produced", "Output records produced", ["stage"])
RETRIED = Counter("labelflow_records_retried", "Records sent to a retry topic", ["stage", "code"])
DEAD_LETTERED = Counter(
    "labelflow_records_dead_lettered", "Records sent to the dead-letter topic", ["stage", "code"]
)
TRANSACTIONS = Counter(
    "labelflow_transactions", "Transactions by outcome (committed, aborted)", ["stage", "outcome"]
)
BATCH_SECONDS = Histogram(
    "labelflow_batch_seconds",
    "From a batch's first record to its transaction's commit",
    ["stage"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
LAG = Gauge("labelflow_consumer_lag", "Records not yet consumed", ["stage", "topic", "partition"])
STALLED = Gauge(
    "labelflow_stalled", "1 while assigned partitions have lag but nothing is processed", ["stage"]
)


class StageMetrics:
    """The runtime's metrics for one stage."""

    def __init__(self, stage: str) -> None:
        self.stage = stage
        self.consumed = CONSUMED.labels(stage)
        self.produced = PRODUCED.labels(stage)
        self.committed = TRANSACTIONS.labels(stage, "committed")
        self.aborted = TRANSACTIONS.labels(stage, "aborted")
        self.batch_seconds = BATCH_SECONDS.labels(stage)
        self.stalled = STALLED.labels(stage)

    def retried(self, code: str) -> None:
        RETRIED.labels(self.stage, code).inc()

    def dead_lettered(self, code: str) -> None:
        DEAD_LETTERED.labels(self.stage, code).inc()

    def lag(self, topic: str, partition: int, value: int) -> None:
        LAG.labels(self.stage, topic, str(partition)).set(value)

    def forget_partition(self, topic: str, partition: int) -> None:
        """Drop the lag series of a partition this worker no longer owns: another worker
        reports it now, and a stale value would be summed twice."""
        with contextlib.suppress(KeyError):
            LAG.remove(self.stage, topic, str(partition))


def serve(port: int) -> None:
    """Expose ``/metrics`` on ``port`` from a background thread."""
    start_http_server(port)
