"""A scripted annotation history through the whole pipeline ends in exactly the catalog the
history implies, on SQLite and on PostgreSQL.

The expected state comes from the generator (which revision of each task is the newest
valid one, and whether it leaves a sample), never from the pipeline; the expected artifacts
are computed here from the final revision's features and the scene's pixels.
"""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from rasterio.io import MemoryFile

from labelflow.catalog.blobs import BlobStore, blob_key, encode_geotiff
from labelflow.imagery.synthetic import SyntheticProvider
from labelflow.masks import class_pixel_counts, rasterize_features
from labelflow.model import AnnotationEvent, Status, Taxonomy
from labelflow.quality.annotations import Code
from labelflow.sources.synthetic import SyntheticConfig, SyntheticHistory, generate
from pipeline_support import QUARANTINE, RunningPipeline, catalog_problems

pytestmark = pytest.mark.integration

HISTORY = SyntheticConfig(
    seed=20250101,
    tasks=520,
    scene_size=64,
    bad_fraction=0.0,
    duplicate_fraction=0.15,
    out_of_order_fraction=0.2,
)
CONVERGE_TIMEOUT_S = 150.0
ARTIFACT_SAMPLE = 40
"""Live samples whose chip and mask are recomputed here and compared byte for byte."""


def _final_events(history: SyntheticHistory) -> dict[str, AnnotationEvent]:
    """Each task's newest revision, from the deliveries themselves."""
    final: dict[str, AnnotationEvent] = {}
    for delivery in history.deliveries:
        event = AnnotationEvent.model_validate_json(delivery.value)
        if event.task_id not in final or event.revision > final[event.task_id].revision:
            final[event.task_id] = event
    return final


def _assert_history_is_unruly(history: SyntheticHistory) -> None:
    """The traffic contains every kind of event this test claims to cover."""
    kinds = Counter(d.kind for d in history.deliveries)
    events = [AnnotationEvent.model_validate_json(d.value) for d in history.deliveries]
    statuses = Counter(e.status for e in events)
    seen: dict[str, int] = {}
    out_of_order = 0
    for event in (e for e, d in zip(events, history.deliveries, strict=True) if d.kind != "bad"):
        if event.revision < seen.get(event.task_id, -1):
            out_of_order += 1
        seen[event.task_id] = max(event.revision, seen.get(event.task_id, -1))
    edited = sum(1 for e in history.expected.values() if e.revision and e.revision > 1)
    assert len(history.expected) >= 500
    assert kinds["duplicate"] >= 20, kinds
    assert out_of_order >= 20, out_of_order
    assert edited >= 100, edited
    assert statuses[Status.REJECTED] >= 20 and statuses[Status.DELETED] >= 20, statuses
    live = sum(1 for e in history.expected.values() if e.sample)
    assert 0 < live < len(history.expected)


def test_history_converges_to_its_expected_catalog(
    pipeline: RunningPipeline, tmp_path: Path
) -> None:
    history = generate(HISTORY)
    _assert_history_is_unruly(history)
    quarantine = pipeline.collector(QUARANTINE)
    dead_letters = pipeline.collector("labelflow.deadletter")

    pipeline.publish(history.deliveries)

    catalog = pipeline.catalog
    pipeline.eventually(
        lambda: catalog_problems(catalog, history.expected),
        CONVERGE_TIMEOUT_S,
        "the catalog to reach the history's final state",
    )
    live = [t for t in history.expected.values() if t.sample]
    assert catalog.count() == len(live)
    assert catalog.count(include_deleted=True) == len(history.expected)

    # Older revisions that came late were refused as stale, nothing for any other reason;
    # nothing failed.
    quarantine.drain()
    reasons = Counter(r.code for _, q in pipeline.quarantined(quarantine) for r in q.reasons)
    assert set(reasons) <= {Code.REVISION_STALE}, reasons
    assert dead_letters.drain() == []

    _assert_artifacts(pipeline, history, [t.task_id for t in live], tmp_path)


def _assert_artifacts(
    pipeline: RunningPipeline, history: SyntheticHistory, live: list[str], tmp_path: Path
) -> None:
    """Chip and mask of a sample of live tasks, rendered and rasterized here from the final
    revision, have the hashes the catalog holds, and the blob store holds those bytes."""
    final = _final_events(history)
    scenes = SyntheticProvider(tmp_path / "expected-scenes")
    blobs = BlobStore.from_settings(pipeline.settings)
    taxonomy = Taxonomy()
    for task_id in random.Random(7).sample(live, ARTIFACT_SAMPLE):
        event = final[task_id]
        assert event.image is not None
        chip = scenes.read(event.image)
        mask = rasterize_features(
            event.features,
            taxonomy,
            chip=chip,
            space=event.coordinates,
            source_size=(event.image.width or chip.width, event.image.height or chip.height),
        )
        image_bytes = encode_geotiff(
            chip.pixels, crs=chip.crs, transform=chip.transform, nodata=chip.nodata
        )
        mask_bytes = encode_geotiff(mask, crs=chip.crs, transform=chip.transform)

        sample = pipeline.catalog.get(task_id)
        assert sample is not None, task_id
        assert (sample.revision, sample.image_hash, sample.mask_hash) == (
            event.revision,
            blob_key(image_bytes),
            blob_key(mask_bytes),
        ), task_id
        assert sample.class_pixels == class_pixel_counts(mask, taxonomy)
        assert sample.lineage.event_id == event.event_id
        assert sample.lineage.config_hash == pipeline.settings.pipeline_config_hash
        with MemoryFile(blobs.get(sample.mask_hash)) as stored, stored.open() as src:
            np.testing.assert_array_equal(src.read(1), mask)
