"""One reconcile run: list, compare, repair through ``annotations.raw``, record.

1. forget repairs whose window ended (so a task repaired long ago may be repaired again);
2. read the source's listing, the catalog's state of the source's rows, the markers and the
   revisions held in quarantine — four tables;
3. classify drift (:func:`labelflow.reconcile.drift.classify`, one query);
4. ask the source for the repair events of the tasks owed one, publish them into
   ``annotations.raw`` and wait for the broker's acknowledgement;
5. record the run and its repairs in one transaction, then hand the run to ``lineage``
   (OpenLineage events into Kafka, :mod:`labelflow.openlineage`), if given.

A crash between 4 and 5 leaves repairs published but not recorded: the next run sees the
tasks still drifted (or already repaired) and emits them again at most once more, which the
pipeline makes harmless (the catalog's upserts are idempotent). A dry run stops after 3 and
records the run, flagged.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pyarrow.compute as pc

from labelflow.catalog.store import Catalog
from labelflow.config import Settings
from labelflow.kafka.quarantine import read_quarantine
from labelflow.model import AnnotationEvent
from labelflow.quality.annotations import Code
from labelflow.reconcile import runs
from labelflow.reconcile.drift import CATEGORIES, HELD_SCHEMA, Bounds, classify
from labelflow.reconcile.listing import Drifted, SourceListing
from labelflow.reconcile.runs import RunReport

log = logging.getLogger(__name__)

Publish = Callable[[Sequence[AnnotationEvent]], None]
HeldIndex = Callable[[], pa.Table]

EXAMPLE_FIELDS = ("task_id", "source_revision", "catalog_revision", "attempts")


def publish_raw(settings: Settings) -> Publish:
    """Repairs go where every source's events go: ``annotations.raw``, keyed by task."""

    def publish(events: Sequence[AnnotationEvent]) -> None:
        from labelflow.sources.publish import RawPublisher

        publisher = RawPublisher(settings)
        for event in events:
            publisher.publish(event)
        publisher.flush()

    return publish


def held_in_quarantine(settings: Settings) -> HeldIndex:
    """The revisions in ``annotations.quarantine`` that broke a rule (``revision.stale``
    alone is not a fault of the revision: a newer one was there first)."""

    def read() -> pa.Table:
        ids: list[str] = []
        revisions: list[int] = []
        for item in read_quarantine(settings):
            held = item.held
            if held is None or held.task_id is None or held.revision is None:
                continue
            if all(r.code == Code.REVISION_STALE for r in held.reasons):
                continue
            ids.append(held.task_id)
            revisions.append(held.revision)
        return pa.table([ids, revisions], schema=HELD_SCHEMA)

    return read


class Reconciler:
    """Reconciles one source with the catalog; :meth:`run` once per cycle."""

    def __init__(
        self,
        settings: Settings,
        catalog: Catalog,
        source: SourceListing,
        *,
        publish: Publish | None = None,
        held: HeldIndex | None = None,
        lineage: Callable[[RunReport], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.options = settings.reconcile
        self.catalog = catalog
        self.source = source
        self.publish = publish or publish_raw(settings)
        self.held = held or held_in_quarantine(settings)
        self.lineage = lineage
        self.clock = clock

    def run(self, *, dry_run: bool = False) -> RunReport:
        run_id = uuid.uuid4().hex
        now = self.clock()
        started = datetime.fromtimestamp(now, UTC)
        began = time.perf_counter()
        report = RunReport(
            run_id=run_id,
            source=self.source.name,
            dry_run=dry_run,
            outcome="ok",
            started_at=started,
            duration_s=0.0,
            listed=0,
            catalogued=0,
            repairs=0,
            counts=dict.fromkeys(CATEGORIES, 0),
            examples={},
        )
        emitted: list[tuple[str, int, str]] = []
        try:
            # 1.
            if not dry_run:
                window = timedelta(seconds=self.options.repair_window_s)
                runs.reset_window(self.catalog, self.source.name, started - window)
            # 2.
            listing = self.source.listing()
            state = runs.catalog_state(self.catalog, self.source.scope)
            marks = runs.markers(self.catalog, self.source.name, self.source.scope)
            held = self.held()
            # 3.
            found = classify(
                listing,
                state,
                held,
                marks,
                accepted=[str(s) for s in self.settings.accepted_statuses],
                bounds=Bounds(
                    now=now,
                    stuck_after_s=self.options.stuck_after_s,
                    max_repairs=self.options.max_repairs,
                    repair_window_s=self.options.repair_window_s,
                ),
            )
            report.listed, report.catalogued = listing.num_rows, state.num_rows
            # Counted and sampled as columns: drift can be tens of thousands of rows.
            for item in pc.value_counts(found["category"]).to_pylist():
                category = item["values"]
                report.counts[category] = item["counts"]
                chosen = found.filter(pc.equal(found["category"], category))
                report.examples[category] = (
                    chosen.select(EXAMPLE_FIELDS).slice(0, self.options.examples).to_pylist()
                )
            # 4.
            if not dry_run:
                owed = [
                    Drifted(
                        r["task_id"], r["category"], r["source_revision"], r["catalog_revision"]
                    )
                    for r in found.filter(found["repair"]).to_pylist()
                ]
                of_task = {d.task_id: d.category for d in owed}
                events = self.source.repair_events(owed, run_id) if owed else []
                if events:
                    self.publish(events)
                emitted = [(e.task_id, e.revision, of_task[e.task_id]) for e in events]
                report.repairs = len(emitted)
        except Exception as exc:
            report.outcome = "failed"
            report.error = f"{type(exc).__name__}: {exc}"[:2000]
            raise
        finally:
            report.duration_s = round(time.perf_counter() - began, 6)
            # 5.
            try:
                runs.record(self.catalog, report, emitted, started)
            except Exception:
                log.exception("could not record reconcile run %s", run_id)
            if self.lineage is not None:
                try:
                    self.lineage(report)
                except Exception:
                    log.exception("could not emit the lineage of reconcile run %s", run_id)
        log.info(
            "reconciled",
            extra={"source": report.source, "counts": report.counts, "repairs": report.repairs},
        )
        return report


def start_reconciling(settings: Settings, stop: threading.Event) -> threading.Thread | None:
    """What ``labelflow up`` runs: a thread reconciling the configured Label Studio project
    every ``reconcile.interval_s`` until ``stop`` is set; None when there is nothing to
    reconcile (no project, or the interval is 0)."""
    project = settings.labelstudio_project
    interval = settings.reconcile.interval_s
    if not interval or project is None or not settings.uses_labelstudio:
        return None

    def loop() -> None:
        from labelflow.openlineage import reconcile_lineage
        from labelflow.reconcile.listing import LabelStudioSource

        while not stop.wait(interval):
            try:
                source = LabelStudioSource(settings, project)
                with Catalog(settings.resolved_catalog_url) as catalog:
                    try:
                        lineage = reconcile_lineage(settings)
                        Reconciler(settings, catalog, source, lineage=lineage).run()
                    finally:
                        source.close()
            except Exception:  # the next cycle tries again; a failed run is recorded
                log.exception("reconcile cycle failed")

    thread = threading.Thread(target=loop, name="reconcile", daemon=True)
    thread.start()
    return thread
