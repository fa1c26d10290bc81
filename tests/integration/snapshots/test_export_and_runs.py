"""Exports hold exactly the snapshot's files; runs name the snapshot they trained on."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from labelflow.snapshots.export import export, file_stem
from labelflow.snapshots.runs import list_runs, runs_for_sample
from labelflow.snapshots.store import SnapshotStore

from .conftest import CLASSES, World

pytestmark = pytest.mark.integration


@pytest.fixture
def world_v1(world: World) -> World:
    world.add(range(25))
    SnapshotStore.from_settings(world.settings).create("v1", world.catalog, world.settings)
    return world


def test_dir_export_holds_every_blob_and_a_row_per_sample(world_v1: World, tmp_path: Path) -> None:
    snapshot = SnapshotStore.from_settings(world_v1.settings).open("v1")
    out = tmp_path / "export"
    assert export(snapshot, world_v1.blobs, out, "dir") == 25
    rows = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(rows) == 25
    for row in rows:
        assert (out / row["image"]).read_bytes() == world_v1.blobs.get(row["image_hash"])
        assert (out / row["mask"]).read_bytes() == world_v1.blobs.get(row["mask_hash"])
        assert row["image"].startswith(f"{row['split']}/{file_stem(row['sample_id'])}")
    assert json.loads((out / "snapshot.json").read_text())["name"] == "v1"
    with pytest.raises(Exception, match="exists"):
        export(snapshot, world_v1.blobs, out, "dir")


def test_coco_regions_add_up_to_the_catalogued_class_pixels(
    world_v1: World, tmp_path: Path
) -> None:
    snapshot = SnapshotStore.from_settings(world_v1.settings).open("v1")
    out = tmp_path / "coco"
    export(snapshot, world_v1.blobs, out, "coco")
    catalogued = {v.sample_id: v.class_pixels for v in world_v1.catalog.list()}
    images = 0
    for path in (out / "annotations").glob("*.json"):
        doc = json.loads(path.read_text())
        assert {c["name"]: c["id"] for c in doc["categories"]} == CLASSES
        names = {c["id"]: c["name"] for c in doc["categories"]}
        for image in doc["images"]:
            images += 1
            assert (out / image["file_name"]).is_file()
            area: dict[str, float] = {}
            for a in doc["annotations"]:
                if a["image_id"] == image["id"]:
                    area[names[a["category_id"]]] = area.get(names[a["category_id"]], 0) + a["area"]
            expected = {k: v for k, v in catalogued[image["sample_id"]].items() if v}
            assert area == expected
    assert images == 25


def test_runs_are_recorded_and_found_by_sample(world_v1: World, tmp_path: Path) -> None:
    from labelflow.cli import app

    metrics = tmp_path / "metrics.json"
    metrics.write_text(json.dumps({"miou": 0.61, "epochs": 2}))
    env = {
        "LABELFLOW_CATALOG_URL": world_v1.settings.resolved_catalog_url,
        "LABELFLOW_BLOB_URL": world_v1.settings.resolved_blob_url,
    }
    base = ["--data-dir", str(world_v1.settings.data_dir), "runs"]
    runner = CliRunner()
    done = runner.invoke(
        app,
        [*base, "record", "--snapshot", "v1", "--model", "unet-a", "--metrics", str(metrics)],
        env=env,
    )
    assert done.exit_code == 0, done.output
    missing = runner.invoke(
        app,
        [*base, "record", "--snapshot", "nope", "--model", "m", "--metrics", str(metrics)],
        env=env,
    )
    assert missing.exit_code != 0
    (run,) = list_runs(world_v1.settings)
    assert (run.snapshot, run.model, run.metrics) == ("v1", "unet-a", {"miou": 0.61, "epochs": 2})
    snapshot = SnapshotStore.from_settings(world_v1.settings).open("v1")
    assert run.manifest_sha256 == snapshot.meta.files["manifest.parquet"]
    split = snapshot.manifest().to_pylist()[0]["split"]
    assert [(r.run_id, s) for r, s in runs_for_sample(world_v1.settings, "s00000")] == [
        (run.run_id, split)
    ]
    assert runs_for_sample(world_v1.settings, "s99999") == []
    listed = runner.invoke(app, [*base, "list", "--sample", "s00000"], env=env)
    assert run.run_id in listed.output


def test_webdataset_shards_hold_each_sample_once(world_v1: World, tmp_path: Path) -> None:
    import tarfile

    snapshot = SnapshotStore.from_settings(world_v1.settings).open("v1")
    out = tmp_path / "wds"
    export(snapshot, world_v1.blobs, out, "webdataset")
    members: dict[str, bytes] = {}
    for shard in sorted(out.glob("*.tar")):
        with tarfile.open(shard) as tar:
            for info in tar.getmembers():
                extracted = tar.extractfile(info)
                assert extracted is not None
                members[info.name] = extracted.read()
    metas = [json.loads(v) for k, v in members.items() if k.endswith(".json")]
    assert sorted(m["sample_id"] for m in metas) == [f"s{i:05d}" for i in range(25)]
    for meta in metas:
        key = file_stem(meta["sample_id"]).replace(".", "_")
        assert members[f"{key}.image.tif"] == world_v1.blobs.get(meta["image_hash"])
        assert members[f"{key}.mask.tif"] == world_v1.blobs.get(meta["mask_hash"])
