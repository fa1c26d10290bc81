"""The reconciler against a real catalog (SQLite and PostgreSQL), its repairs captured instead
of published: what it classifies, what it emits, what it records, and that a repair that
keeps failing ends up stuck instead of being emitted forever."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import pyarrow as pa
import pytest

from labelflow.catalog.store import Catalog, Deletion
from labelflow.config import Settings
from labelflow.model import AnnotationEvent, Status
from labelflow.reconcile.drift import HELD_SCHEMA
from labelflow.reconcile.listing import SyntheticSource
from labelflow.reconcile.reconciler import Reconciler
from labelflow.reconcile.runs import recent
from labelflow.reconcile.settings import ReconcileSettings
from labelflow.sources.synthetic import SyntheticConfig, generate
from support import make_version

pytestmark = pytest.mark.integration

T0 = 1_800_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def catalog(catalog_url: str) -> Iterator[Catalog]:
    with Catalog(catalog_url) as cat:
        cat.migrate()
        yield cat


def in_step(catalog: Catalog, source: SyntheticSource) -> None:
    """Write the catalog exactly as the source says (as the pipeline would have)."""
    writes: list = []
    for event in source.events.values():
        if event.removes_sample:
            writes.append(Deletion(sample_id=event.task_id, revision=event.revision))
        else:
            writes.append(make_version(event.task_id, event.revision))
    catalog.apply(writes)


def reconciler(
    catalog: Catalog, source: SyntheticSource, clock: Clock, held: Sequence[tuple[str, int]] = ()
) -> tuple[Reconciler, list[AnnotationEvent]]:
    emitted: list[AnnotationEvent] = []
    settings = Settings(
        catalog_url=catalog.url,
        reconcile=ReconcileSettings(stuck_after_s=60, max_repairs=2, repair_window_s=3600),
    )
    table = pa.table([[t for t, _ in held], [r for _, r in held]], schema=HELD_SCHEMA)
    return (
        Reconciler(
            settings, catalog, source, publish=emitted.extend, held=lambda: table, clock=clock
        ),
        emitted,
    )


def test_drift_is_classified_repaired_through_events_and_recorded(catalog: Catalog) -> None:
    history = generate(SyntheticConfig(seed=3, tasks=60))
    source = SyntheticSource.from_deliveries(d.value for d in history.deliveries)
    in_step(catalog, source)
    live = sorted(t for t, e in source.events.items() if not e.removes_sample)
    missing, stale, orphaned = live[0:3], live[3:5], live[5:9]
    with catalog.transaction(write=True) as conn:
        from labelflow.reconcile.runs import samples

        conn.execute(samples.delete().where(samples.c.sample_id.in_(missing)))
    for task_id in stale:
        event = source.events[task_id]
        source.events[task_id] = event.model_copy(update={"revision": event.revision + 10})
    catalog_revisions = {t: catalog.state(t).revision for t in orphaned}  # type: ignore[union-attr]
    for task_id in orphaned:
        del source.events[task_id]

    clock = Clock()
    run, emitted = reconciler(catalog, source, clock)
    report = run.run()

    assert {k: n for k, n in report.counts.items() if n} == {
        "missing": 3,
        "stale": 2,
        "orphaned": 4,
    }
    assert report.repairs == 9 and report.outcome == "ok"
    by_task = {e.task_id: e for e in emitted}
    assert set(by_task) == {*missing, *stale, *orphaned}
    for task_id in orphaned:
        assert by_task[task_id].status == Status.DELETED
        assert by_task[task_id].revision == catalog_revisions[task_id] + 1
    for task_id in (*missing, *stale):
        assert by_task[task_id] == source.events[task_id]
    [recorded] = recent(catalog)
    assert recorded.counts == report.counts and recorded.repairs == 9
    assert [e["task_id"] for e in recorded.examples["missing"]] == missing

    # Right after: the repairs are in flight, nothing is emitted twice.
    clock.now += 5
    emitted.clear()
    again = run.run()
    assert {k: n for k, n in again.counts.items() if n} == {"pending": 9}
    assert emitted == []


def test_a_repair_that_keeps_failing_is_stuck_not_a_loop(catalog: Catalog) -> None:
    history = generate(SyntheticConfig(seed=4, tasks=10))
    source = SyntheticSource.from_deliveries(d.value for d in history.deliveries)
    in_step(catalog, source)
    task_id = sorted(t for t, e in source.events.items() if not e.removes_sample)[0]
    event = source.events[task_id]
    source.events[task_id] = event.model_copy(update={"revision": event.revision + 1})

    clock = Clock()
    run, emitted = reconciler(catalog, source, clock)
    categories = []
    for _ in range(5):  # the pipeline never commits it
        report = run.run()
        categories.append(next(c for c, n in report.counts.items() if n))
        clock.now += 120
    assert categories == ["stale", "stuck", "stuck", "stuck", "stuck"]
    assert len(emitted) == 2  # the first repair and one more: max_repairs

    clock.now += 3600  # a new window: one more try
    emitted.clear()
    run.run()
    assert len(emitted) == 1


def test_a_quarantined_revision_fixed_at_the_source_is_told_apart(catalog: Catalog) -> None:
    history = generate(SyntheticConfig(seed=5, tasks=10))
    source = SyntheticSource.from_deliveries(d.value for d in history.deliveries)
    in_step(catalog, source)
    fixed, still_bad = sorted(t for t, e in source.events.items() if not e.removes_sample)[:2]
    for task_id, bump in ((fixed, 2), (still_bad, 1)):
        event = source.events[task_id]
        source.events[task_id] = event.model_copy(update={"revision": event.revision + bump})
    revisions = {t: source.events[t].revision for t in (fixed, still_bad)}
    held = [(fixed, revisions[fixed] - 1), (still_bad, revisions[still_bad])]

    run, emitted = reconciler(catalog, source, Clock(), held)
    report = run.run(dry_run=True)
    assert {k: n for k, n in report.counts.items() if n} == {"quarantined_fixed": 1, "held": 1}
    assert emitted == []
    report = run.run()
    assert [e.task_id for e in emitted] == [fixed]
    assert [r.dry_run for r in recent(catalog)] == [False, True]


def test_the_catalog_state_is_read_whole_whatever_the_ids_hold(catalog: Catalog) -> None:
    from labelflow.reconcile.listing import Scope
    from labelflow.reconcile.runs import catalog_state

    scope = Scope(prefix="synthetic:")
    assert catalog_state(catalog, scope).num_rows == 0
    ids = ["synthetic:a,b", 'synthetic:"quoted"', "synthetic:é ü", "synthetic:x\ty", "other:z"]
    catalog.apply([make_version(sample_id, n + 1) for n, sample_id in enumerate(ids)])
    catalog.apply([Deletion(sample_id=ids[1], revision=9)])
    state = catalog_state(catalog, scope).to_pylist()
    assert sorted((r["task_id"], r["revision"], r["deleted"]) for r in state) == sorted(
        [(ids[0], 1, False), (ids[1], 9, True), (ids[2], 3, False), (ids[3], 4, False)]
    )
