"""``labelflow audit`` balances every stage after a run with quarantines, duplicates and a dead
letter, and reports a catalog row removed behind the pipeline's back as unexplained, with the
coordinates of the record it came from."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from typer.testing import CliRunner

from labelflow.audit import audit
from labelflow.cli import app
from labelflow.model import AnnotationEvent, ImageRef
from labelflow.reconcile.runs import samples
from labelflow.sources.synthetic import SyntheticConfig, generate
from pipeline_support import DEAD_LETTER, QUARANTINE, RunningPipeline, catalog_problems, worker_env

pytestmark = pytest.mark.integration

HISTORY = SyntheticConfig(seed=77, tasks=40, scene_size=64, bad_fraction=0.15)


def test_audit_balances_and_finds_a_removed_record(pipeline: RunningPipeline) -> None:
    history = generate(HISTORY)
    bad = sum(1 for d in history.deliveries if d.kind == "bad")
    quarantine = pipeline.collector(QUARANTINE)
    dead = pipeline.collector(DEAD_LETTER)
    pipeline.publish(history.deliveries)
    # One revision past everything, on an image that does not exist: dead-lettered.
    last = max(
        (
            AnnotationEvent.model_validate_json(d.value)
            for d in history.deliveries
            if d.kind != "bad"
        ),
        key=lambda e: e.revision,
    )
    lost = last.model_copy(
        update={
            "task_id": "synthetic:lost-image",
            "image": ImageRef(provider="geotiff", uri="/nowhere/scene.tif"),
        }
    )
    pipeline.publish_raw(lost.task_id, lost.model_dump_json().encode())
    pipeline.flush()
    catalog = pipeline.catalog
    pipeline.eventually(
        lambda: catalog_problems(catalog, history.expected),
        120,
        "the catalog to reach the history's final state",
    )
    pipeline.wait_count(dead, 1, 60)
    pipeline.wait_count(quarantine, bad, 60)
    # Webhooks repeated once everything is in: validate drops them.
    repeated = [
        d
        for d in history.deliveries
        if d.kind == "revision"
        and AnnotationEvent.model_validate_json(d.value).revision
        == history.expected[d.task_id].revision
    ][:5]
    pipeline.publish(repeated)

    def unbalanced() -> list[str]:
        report = audit(pipeline.settings, catalog)
        return [f"{s.stage}: {s}" for s in report.stages if not s.balanced or s.in_flight]

    pipeline.eventually(unbalanced, 60, "every stage to balance with nothing in flight")
    report = audit(pipeline.settings, catalog)
    by_stage = {s.stage: s for s in report.stages}
    validate, materialize, commit = (
        by_stage["validate"],
        by_stage["materialize"],
        by_stage["commit"],
    )
    assert validate.records == len(history.deliveries) + 1 + len(repeated)
    assert validate.quarantined >= bad and validate.dropped >= len(repeated)
    assert materialize.dead_lettered == 1
    assert validate.out == materialize.records and materialize.out == commit.records
    for s in report.stages:
        assert s.records == (
            s.out + s.quarantined + s.dead_lettered + s.dropped + s.in_flight + s.unexplained
        )

    # A window after everything holds nothing; one before it holds everything.
    later = audit(pipeline.settings, catalog, since=datetime.now(UTC) + timedelta(hours=1))
    assert [s.records for s in later.stages] == [0, 0, 0]
    earlier = audit(pipeline.settings, catalog, since=datetime.now(UTC) - timedelta(hours=1))
    assert earlier == report

    # A committed version removed from the catalog is unexplained, and named.
    victim = next(t for t in history.expected.values() if t.sample)
    versions = samples.metadata.tables["sample_versions"]
    with catalog.transaction(write=True) as conn:
        conn.execute(
            versions.delete().where(
                versions.c.sample_id == victim.task_id, versions.c.revision == victim.revision
            )
        )
    result = CliRunner().invoke(app, ["audit", "--json"], env=worker_env(pipeline.settings))
    assert result.exit_code == 1, result.output
    shown = {s["stage"]: s for s in json.loads(result.stdout)["stages"]}
    assert shown["validate"]["unexplained"] == shown["materialize"]["unexplained"] == 0
    assert shown["commit"]["unexplained"] >= 1
    named = {(e["task_id"], e["revision"]) for e in shown["commit"]["examples"]}
    assert (victim.task_id, victim.revision) in named
    assert all(e["topic"] == pipeline.topic("samples.ready") for e in shown["commit"]["examples"])
