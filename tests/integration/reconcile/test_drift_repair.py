"""Drift injected while the pipeline is stopped is found exactly, and one reconcile cycle plus
the pipeline brings the catalog exactly to the source's state (synthetic source, SQLite and
PostgreSQL, a real broker and real workers).

The drift: events lost on the way (all of a task's, or only its newest revision, as lost
webhooks do), catalog rows deleted, tasks edited and deleted at the source while nobody
listened, and quarantined revisions fixed at the source. Each set is disjoint from the others,
so the run's counts must equal the injected numbers exactly.
"""

from __future__ import annotations

import random

import pytest

from labelflow.model import AnnotationEvent, Feature, Status
from labelflow.quality.annotations import Code
from labelflow.reconcile.listing import SyntheticSource
from labelflow.reconcile.reconciler import Reconciler
from labelflow.reconcile.runs import recent, samples
from labelflow.sources.synthetic import ExpectedTask, SyntheticConfig, generate
from pipeline_support import QUARANTINE, RunningPipeline, catalog_problems

pytestmark = pytest.mark.integration

HISTORY = SyntheticConfig(
    seed=909,
    tasks=80,
    scene_size=64,
    bad_fraction=0.0,
    out_of_order_fraction=0.0,
    duplicate_fraction=0.1,
)
CONVERGE_TIMEOUT_S = 120.0


def expected(source: SyntheticSource, deleted: dict[str, int]) -> dict[str, ExpectedTask]:
    """What the catalog must hold: the source's newest revision per task, and the orphans
    deleted at the revision their repair carried."""
    out = {
        t: ExpectedTask(task_id=t, revision=e.revision, sample=not e.removes_sample)
        for t, e in source.events.items()
    }
    out.update({t: ExpectedTask(task_id=t, revision=r, sample=False) for t, r in deleted.items()})
    return out


def bad(event: AnnotationEvent) -> AnnotationEvent:
    """A newer revision of ``event`` that validate must quarantine (an unknown class)."""
    square = [[[4, 4], [20, 4], [20, 20], [4, 20], [4, 4]]]
    spaceship = Feature(label="spaceship", geometry={"type": "Polygon", "coordinates": square})
    return event.model_copy(
        update={"revision": event.revision + 1, "status": Status.SUBMITTED, "features": [spaceship]}
    )


def restart(pipeline: RunningPipeline) -> None:
    pipeline.supervisor.workers.clear()
    pipeline.supervisor.start()


def test_one_reconcile_cycle_repairs_exactly_the_injected_drift(
    pipeline: RunningPipeline,
) -> None:
    history = generate(HISTORY)
    truth = SyntheticSource.from_deliveries(d.value for d in history.deliveries)
    revisions: dict[str, set[int]] = {}
    for d in history.deliveries:
        event = AnnotationEvent.model_validate_json(d.value)
        revisions.setdefault(event.task_id, set()).add(event.revision)
    rng = random.Random(5)
    live = sorted(t for t, e in truth.events.items() if not e.removes_sample)
    removed = sorted(t for t, e in truth.events.items() if e.removes_sample)
    edited_twice = [t for t in live if len(revisions[t]) >= 2]
    rng.shuffle(live)
    rng.shuffle(edited_twice)
    lost_last = edited_twice[:3]
    rest = [t for t in live if t not in lost_last]
    lost_all, deleted_rows, edited, gone, fixed = (
        rest[0:4], rest[4:7], rest[7:10], rest[10:13], rest[13:15]
    )  # fmt: skip
    deleted_rows += removed[:2]

    # 1. The pipeline sees the history, less what was lost, plus two bad revisions.
    dropped = set(lost_all)
    sent = [
        d
        for d in history.deliveries
        if d.task_id not in dropped
        and not (d.task_id in lost_last and d.task_id in truth.events
                 and AnnotationEvent.model_validate_json(d.value).revision
                 == truth.events[d.task_id].revision)
    ]  # fmt: skip
    quarantine = pipeline.collector(QUARANTINE)
    pipeline.publish(sent)
    for task_id in fixed:
        pipeline.publish_raw(task_id, bad(truth.events[task_id]).model_dump_json().encode())
    pipeline.flush()
    seen = SyntheticSource.from_deliveries(d.value for d in sent)
    catalog = pipeline.catalog
    pipeline.eventually(
        lambda: catalog_problems(catalog, expected(seen, {})),
        CONVERGE_TIMEOUT_S,
        "the catalog to hold what the pipeline was sent",
    )
    pipeline.wait_count(quarantine, len(fixed), 60)
    codes = {r.code for _, q in pipeline.quarantined(quarantine) for r in q.reasons}
    assert codes == {Code.CLASS_UNKNOWN}

    # 2. Stopped, the catalog and the source drift apart.
    assert set(pipeline.supervisor.stop().values()) == {0}
    with catalog.transaction(write=True) as conn:
        conn.execute(samples.delete().where(samples.c.sample_id.in_(deleted_rows)))
    for task_id in edited:
        event = truth.events[task_id]
        truth.events[task_id] = event.model_copy(
            update={"revision": event.revision + 5, "status": Status.APPROVED}
        )
    orphan_revisions = {t: truth.events[t].revision + 1 for t in gone}
    for task_id in gone:
        del truth.events[task_id]
    for task_id in fixed:  # someone fixed the class at the source
        event = truth.events[task_id]
        truth.events[task_id] = event.model_copy(update={"revision": event.revision + 2})

    # 3. One cycle finds exactly that, and repairs it through annotations.raw.
    report = Reconciler(pipeline.settings, catalog, truth).run()
    injected = {
        "missing": len(lost_all) + len(deleted_rows),
        "stale": len(lost_last) + len(edited),
        "orphaned": len(gone),
        "quarantined_fixed": len(fixed),
    }
    assert {k: n for k, n in report.counts.items() if n} == injected
    assert report.repairs == report.drift == sum(injected.values()) == 20
    assert report.listed == len(truth.events) and report.outcome == "ok"

    restart(pipeline)
    pipeline.eventually(
        lambda: catalog_problems(catalog, expected(truth, orphan_revisions)),
        CONVERGE_TIMEOUT_S,
        "the catalog to reach the source's state after the repairs",
    )

    # 4. Nothing is left to repair, and both runs are on record.
    again = Reconciler(pipeline.settings, catalog, truth).run()
    assert again.drift == 0 and again.repairs == 0, again.counts
    assert [r.run_id for r in recent(catalog)] == [again.run_id, report.run_id]
