"""``labelflow ingest`` and ``labelflow samples`` against a running pipeline, as a person runs
them: a GeoJSON file over the real aerial COG becomes a stored sample, and ingesting the same
file again adds nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from labelflow.config import Settings
from labelflow.kafka.topics import Topic
from pipeline_support import StartPipeline, worker_env
from support import missing_prerequisite

COG = Path(__file__).resolve().parents[3] / ".." / "shared" / "data" / "imagery" / "cogeo.tif"
WEST, NORTH = 14321853.1, 4533021.5  # top-left of the COG, EPSG:3857


@pytest.fixture(autouse=True)
def _shared_imagery() -> None:
    if not COG.exists():
        missing_prerequisite(f"shared imagery not found at {COG}")


def _labelflow(settings: Settings, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, **worker_env(settings), COLUMNS="200")
    return subprocess.run(
        [sys.executable, "-m", "labelflow", *args],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def _collection(revision: int, size_m: float) -> dict:
    """One task on a 200 m window of the COG with one building of ``size_m`` metres."""
    x, y = WEST + 50, NORTH - 50
    ring = [[x, y], [x + size_m, y], [x + size_m, y - size_m], [x, y - size_m], [x, y]]
    return {
        "type": "FeatureCollection",
        "crs": "EPSG:3857",
        "image": {
            "provider": "geotiff",
            "uri": str(COG),
            "bounds": [WEST, NORTH - 200, WEST + 200, NORTH],
            "bounds_crs": "EPSG:3857",
        },
        "features": [
            {
                "type": "Feature",
                "properties": {
                    "class": "building",
                    "task_id": "ingest-cli-1",
                    "revision": revision,
                },
                "geometry": {"type": "Polygon", "coordinates": [ring]},
            }
        ],
    }


def test_ingest_stores_a_sample_and_reingesting_adds_nothing(
    start_pipeline: StartPipeline, tmp_path: Path
) -> None:
    pipeline = start_pipeline()
    ready = pipeline.collector(Topic.SAMPLES_READY)
    labels = tmp_path / "labels.geojson"
    labels.write_text(json.dumps(_collection(revision=1, size_m=20)))

    first = _labelflow(pipeline.settings, "ingest", str(labels))
    assert first.returncode == 0, first.stderr
    assert "sent" in first.stdout
    pipeline.eventually(
        lambda: [] if pipeline.catalog.get("ingest-cli-1") else ["no sample yet"], 90, "sample"
    )

    again = _labelflow(pipeline.settings, "ingest", str(labels))
    assert again.returncode == 0, again.stderr
    # A newer revision of the same task goes to the same partition behind the re-ingested
    # one: once it is stored, the repeat has been processed too.
    labels.write_text(json.dumps(_collection(revision=2, size_m=40)))
    assert _labelflow(pipeline.settings, "ingest", str(labels)).returncode == 0
    pipeline.eventually(
        lambda: [] if pipeline.catalog.get("ingest-cli-1").revision == 2 else ["rev 1"], 90, "rev 2"
    )
    pipeline.wait_count(ready, 2, 30)
    assert len(ready.records) == 2  # revision 1 once, revision 2 once: the repeat was a no-op
    sample = pipeline.catalog.get("ingest-cli-1")
    assert sample.crs == "EPSG:3857"
    assert sample.class_pixels["building"] > 0
    assert [v.revision for v in pipeline.catalog.history("ingest-cli-1")] == [1, 2]

    listed = _labelflow(pipeline.settings, "samples", "list")
    assert listed.returncode == 0, listed.stderr
    assert "ingest-cli-1" in listed.stdout
    shown = _labelflow(pipeline.settings, "samples", "show", "ingest-cli-1")
    assert shown.returncode == 0, shown.stderr
    assert str(COG) in shown.stdout  # lineage names the imagery
    assert _labelflow(pipeline.settings, "samples", "show", "no-such-task").returncode == 1


def test_ingest_of_an_unreadable_file_says_why(kafka_settings: Settings, tmp_path: Path) -> None:
    bad = tmp_path / "broken.json"
    bad.write_text("{not json")
    result = _labelflow(
        kafka_settings.model_copy(update={"data_dir": tmp_path}), "ingest", str(bad)
    )
    assert result.returncode == 1
    assert "format.malformed_json" in result.stderr
