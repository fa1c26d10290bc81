"""``labelflow explain`` shows a sample's whole chain: two committed revisions with their
lineage and blobs, a quarantined revision and a dead-lettered one on the way."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from labelflow.cli import app
from labelflow.lineage import explain
from labelflow.model import AnnotationEvent, Feature, ImageRef, Status
from labelflow.snapshots.store import SnapshotStore
from labelflow.sources.synthetic import SyntheticConfig, generate
from pipeline_support import DEAD_LETTER, RunningPipeline, worker_env

pytestmark = pytest.mark.integration


def test_explain_shows_every_revision_and_what_happened_to_it(pipeline: RunningPipeline) -> None:
    history = generate(SyntheticConfig(seed=31, tasks=1, scene_size=64, bad_fraction=0.0))
    first = next(
        e
        for d in history.deliveries
        if (e := AnnotationEvent.model_validate_json(d.value)).features
    )
    first = first.model_copy(update={"revision": 1, "status": Status.SUBMITTED})
    square = [[[4, 4], [20, 4], [20, 20], [4, 20], [4, 4]]]
    bad = first.model_copy(
        update={
            "revision": 2,
            "features": [Feature(label="spaceship", geometry={"type": "Polygon",
                                                              "coordinates": square})],
        }
    )  # fmt: skip
    approved = first.model_copy(update={"revision": 3, "status": Status.APPROVED})
    lost_image = approved.model_copy(
        update={"revision": 4, "image": ImageRef(provider="geotiff", uri="/nowhere/scene.tif")}
    )
    dead = pipeline.collector(DEAD_LETTER)
    snapshots = SnapshotStore.from_settings(pipeline.settings)
    snapshots.create("before", pipeline.catalog, pipeline.settings, force=True)
    for event in (first, bad, approved, lost_image):
        pipeline.publish_raw(event.task_id, event.model_dump_json().encode())
    pipeline.flush()
    catalog = pipeline.catalog
    pipeline.wait_count(dead, 1, 60)
    pipeline.eventually(
        lambda: [] if (s := catalog.state(first.task_id)) and s.revision == 3 else ["not yet"],
        60,
        "revision 3 in the catalog",
    )

    snapshots.create("now", catalog, pipeline.settings, force=True)

    found = explain(pipeline.settings, catalog, first.task_id)

    assert found.state is not None and found.state.revision == 3 and not found.state.deleted
    assert [(f.version.revision, f.current) for f in found.versions] == [(1, False), (3, True)]
    assert all(f.blobs == {"image": True, "mask": True} for f in found.versions)
    lineage = found.versions[1].version.lineage
    assert lineage.kafka_topic == pipeline.topic("annotations.valid")
    assert lineage.image_uri == first.image.uri  # type: ignore[union-attr]
    kinds = [(s.kind, s.revision) for s in found.journey]
    for step in [("delivered", r) for r in (1, 2, 3, 4)] + [
        ("accepted", 1), ("accepted", 3), ("accepted", 4), ("quarantined", 2),
        ("materialized", 1), ("materialized", 3), ("dead-lettered", 4),
    ]:  # fmt: skip
        assert step in kinds, (step, kinds)
    quarantined = next(s for s in found.journey if s.kind == "quarantined")
    assert quarantined.detail["reasons"] == ["class.unknown"]
    dead_lettered = next(s for s in found.journey if s.kind == "dead-lettered")
    assert dead_lettered.detail["stage"] == "materialize"
    assert dead_lettered.detail["origin"].startswith(pipeline.topic("annotations.valid"))

    assert [(m.snapshot, m.revision) for m in found.snapshots] == [("before", None), ("now", 3)]
    assert "no version" in (found.snapshots[0].why_not or "")

    env = worker_env(pipeline.settings)
    result = CliRunner().invoke(app, ["explain", first.task_id, "--json"], env=env)
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert shown["state"]["revision"] == 3 and len(shown["journey"]) == len(found.journey)
    wide = {**env, "COLUMNS": "300"}  # whole values on one line each, to find them below
    readable = CliRunner().invoke(app, ["explain", first.task_id], env=wide)
    assert readable.exit_code == 0, readable.output
    assert "dead-lettered" in readable.output and "class.unknown" in readable.output
