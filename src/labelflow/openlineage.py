"""OpenLineage run events, Kafka first: nothing is lost while the lineage endpoint is down.

Events are built with the ``openlineage-python`` client's classes and produced to the topic
``labelflow.lineage`` (created on first use), keyed by run id. ``labelflow lineage forward``
reads that topic in its own consumer group and hands each event to an OpenLineage transport —
a JSON-lines file by default, HTTP (Marquez or any OpenLineage endpoint) with ``--url`` — and
commits its offset only once the transport accepted it: an endpoint that is down stops the
forwarder with the event still in Kafka, and the next forward sends it (at least once, in
order per run).

Reconcile runs emit START and COMPLETE (or FAIL, with the error) with the source listing and
the catalog as inputs, ``annotations.raw`` as output, and one data-quality assertion per drift
category (``no_missing`` … passes when the run found none).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path

from confluent_kafka import OFFSET_BEGINNING, TopicPartition
from openlineage.client.event_v2 import (
    InputDataset,
    Job,
    OutputDataset,
    Run,
    RunEvent,
    RunState,
)
from openlineage.client.facet_v2 import (
    data_quality_assertions_dataset,
    error_message_run,
    job_type_job,
)
from openlineage.client.serde import Serde
from openlineage.client.transport.transport import Transport
from sqlalchemy import make_url

from labelflow import __version__
from labelflow.config import Settings
from labelflow.kafka.clients import admin_client, consumer, producer
from labelflow.kafka.ensure import ensure_topics
from labelflow.kafka.scan import committed, spans
from labelflow.kafka.topics import DAY_MS, Topic, TopicSpec, resolve, topic_name
from labelflow.reconcile.drift import REPAIRED
from labelflow.reconcile.runs import RunReport

log = logging.getLogger(__name__)

_Assertions = data_quality_assertions_dataset.DataQualityAssertionsDatasetFacet

LINEAGE_TOPIC = TopicSpec(
    "labelflow.lineage", "OpenLineage run events waiting to be forwarded", 30 * DAY_MS
)
"""Kept a month: long enough for an endpoint to be down over a holiday."""

NAMESPACE = "labelflow"
PRODUCER = f"https://github.com/labelflow/labelflow/tree/{__version__}"
FLUSH_TIMEOUT_S = 30.0
FORWARD_GROUP = "labelflow.lineage-forwarder"


def _catalog_dataset(settings: Settings) -> InputDataset:
    url = make_url(settings.resolved_catalog_url)
    where = url.set(password=None).render_as_string(hide_password=True)
    return InputDataset(namespace=where, name="samples")


def reconcile_events(report: RunReport, settings: Settings) -> list[RunEvent]:
    """START and COMPLETE/FAIL of one reconcile run."""
    job = Job(
        namespace=NAMESPACE,
        name=f"reconcile.{report.source}",
        facets={
            "jobType": job_type_job.JobTypeJobFacet(
                processingType="BATCH", integration="LABELFLOW", jobType="RECONCILE"
            )
        },
    )
    inputs = [
        InputDataset(namespace=f"labelflow-source://{report.source}", name="tasks"),
        _catalog_dataset(settings),
    ]
    assertions = [
        data_quality_assertions_dataset.Assertion(
            assertion=f"no_{category}",
            success=report.counts.get(category, 0) == 0,
            actual=str(report.counts.get(category, 0)),
            expected="0",
        )
        for category in REPAIRED
    ]
    outputs = [
        OutputDataset(
            namespace=f"kafka://{settings.bootstrap_servers}",
            name=topic_name(Topic.RAW, settings),
            facets={"dataQualityAssertions": _Assertions(assertions=assertions)},
        )
    ]
    start = RunEvent(
        eventType=RunState.START,
        eventTime=report.started_at.isoformat(),
        run=Run(runId=_run_uuid(report.run_id)),
        job=job,
        inputs=inputs,
        outputs=[],
        producer=PRODUCER,
    )
    ended = report.started_at + timedelta(seconds=report.duration_s)
    facets = {}
    if report.outcome != "ok":
        facets["errorMessage"] = error_message_run.ErrorMessageRunFacet(
            message=report.error or report.outcome, programmingLanguage="python"
        )
    end = RunEvent(
        eventType=RunState.COMPLETE if report.outcome == "ok" else RunState.FAIL,
        eventTime=ended.isoformat(),
        run=Run(runId=_run_uuid(report.run_id), facets=facets),
        job=job,
        inputs=inputs,
        outputs=outputs,
        producer=PRODUCER,
    )
    return [start, end]


def _run_uuid(hex32: str) -> str:
    """A reconcile run id (32 hex digits) in the UUID form OpenLineage asks for."""
    return f"{hex32[:8]}-{hex32[8:12]}-{hex32[12:16]}-{hex32[16:20]}-{hex32[20:32]}"


def ensure_lineage_topic(settings: Settings) -> str:
    ensure_topics(admin_client(settings), resolve((LINEAGE_TOPIC,), settings))
    return topic_name(LINEAGE_TOPIC.topic, settings)


def publish(settings: Settings, events: Sequence[RunEvent]) -> None:
    """Produce ``events`` to the lineage topic and wait for the broker's acknowledgement."""
    topic = ensure_lineage_topic(settings)
    writer = producer(settings)
    failures: list[str] = []
    for event in events:
        writer.produce(
            topic,
            key=event.run.runId.encode(),
            value=Serde.to_json(event).encode(),
            on_delivery=lambda error, _m: failures.append(error.str()) if error else None,
        )
    left = writer.flush(FLUSH_TIMEOUT_S)
    if left or failures:
        raise RuntimeError(f"{left + len(failures)} lineage event(s) not delivered: {failures[:3]}")


def reconcile_lineage(settings: Settings) -> Callable[[RunReport], None]:
    """What a reconciler calls after each run: its events into the lineage topic."""
    return lambda report: publish(settings, reconcile_events(report, settings))


def file_transport(path: Path) -> Transport:
    from openlineage.client.transport.file import FileConfig, FileTransport

    path.parent.mkdir(parents=True, exist_ok=True)
    return FileTransport(FileConfig(log_file_path=str(path), append=True))


def http_transport(url: str) -> Transport:
    from openlineage.client.transport.http import HttpConfig, HttpTransport

    return HttpTransport(HttpConfig(url=url))


def forward(
    settings: Settings,
    transport: Transport,
    *,
    once: bool = True,
    retries: int = 3,
    backoff_s: float = 1.0,
) -> int:
    """Hand the lineage topic's events to ``transport``, in order; return how many.

    1. read the next event from the forwarder group's committed offsets;
    2. emit it, retrying ``retries`` times with backoff;
    3. commit its offset — so an event is committed only once the transport took it.

    When the transport keeps failing the forwarder stops with the error and the event stays
    in Kafka for the next forward. ``once`` stops at the end the topic had when it started.
    Partitions are assigned, not subscribed: one forwarder runs at a time (two would each
    send every event, which is allowed, as delivery is at least once).
    """
    topic = ensure_lineage_topic(settings)
    reader = consumer(settings, settings.topic_prefix + FORWARD_GROUP)
    sent = 0
    try:
        ends = {s.partition: s.high for s in spans(settings, topic, reader)}
        following = committed(reader, topic, ends)
        reader.assign(
            [TopicPartition(topic, p, o or OFFSET_BEGINNING) for p, o in following.items()]
        )
        while not once or any(following[p] < end for p, end in ends.items()):
            # 1.
            message = reader.poll(1.0)
            if message is None or message.error() is not None:
                continue
            event = json.loads(message.value())
            # 2.
            for attempt in range(retries + 1):
                try:
                    transport.emit(event)  # type: ignore[arg-type]
                    break
                except Exception:
                    if attempt == retries:
                        raise
                    log.warning("lineage transport failed; retrying", exc_info=True)
                    time.sleep(backoff_s * 2**attempt)
            # 3.
            reader.commit(message, asynchronous=False)
            following[message.partition()] = message.offset() + 1
            sent += 1
    finally:
        reader.close()
    return sent
