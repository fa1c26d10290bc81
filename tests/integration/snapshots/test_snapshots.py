"""Snapshots on real catalogs: immutable, correctly diffed, gated, and atomic under a crash."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from labelflow.snapshots import store as store_module
from labelflow.snapshots.settings import GateRules, SnapshotSettings
from labelflow.snapshots.splits import EXCLUDED
from labelflow.snapshots.store import SnapshotError, SnapshotRefused, SnapshotStore

from .conftest import World

pytestmark = pytest.mark.integration


def _files(path: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(path.iterdir())}


def _current(world: World) -> dict[str, tuple[int, str, str]]:
    """The catalog's live samples, read through the catalog's own API, page by page."""
    out: dict[str, tuple[int, str, str]] = {}
    after = None
    while page := world.catalog.list(after=after, limit=100):
        out.update({v.sample_id: (v.revision, v.image_hash, v.mask_hash) for v in page})
        after = page[-1].sample_id
    return out


def test_recreating_a_snapshot_is_refused_and_its_files_stay_unchanged(world: World) -> None:
    world.add(range(40))
    store = SnapshotStore.from_settings(world.settings)
    first = store.create("v1", world.catalog, world.settings)
    before = _files(first.path)
    world.add(range(40, 60))
    with pytest.raises(SnapshotError, match="already exists"):
        store.create("v1", world.catalog, world.settings)
    with pytest.raises(SnapshotError, match="already exists"):
        store.create("v1", world.catalog, world.settings, force=True)
    assert _files(first.path) == before
    assert first.verify() == []
    assert store.open("v1").meta.stats.samples == 40
    assert all(not (p.stat().st_mode & 0o222) for p in first.path.iterdir()), "read-only"
    assert store.names() == ["v1"]


def test_manifest_holds_exactly_the_current_versions_and_the_catalog_state(world: World) -> None:
    world.add(range(30))
    world.add(range(10), revision=2)
    world.catalog.tombstone("s00029", 5)
    snapshot = SnapshotStore.from_settings(world.settings).create(
        "v1", world.catalog, world.settings
    )
    rows = snapshot.manifest(["sample_id", "revision", "image_hash", "mask_hash"]).to_pylist()
    assert {r["sample_id"]: (r["revision"], r["image_hash"], r["mask_hash"]) for r in rows} == (
        _current(world)
    )
    state = snapshot.meta.catalog
    assert (state.live_samples, state.known_samples) == (29, 30)
    # Offsets i * 10 + revision on partition i % 3: the highest of each partition.
    assert state.kafka_offsets["annotations.valid"] == {"0": 271, "1": 281, "2": 291}
    assert sum(snapshot.meta.stats.splits.values()) == 29


def test_diff_matches_an_independently_computed_diff(world: World) -> None:
    world.add(range(50))
    store = SnapshotStore.from_settings(world.settings)
    before = _current(world)
    store.create("v1", world.catalog, world.settings)
    world.add(range(50, 62))  # added
    world.add(range(0, 50, 7), revision=2)  # changed
    for i in (3, 11, 40):  # removed
        world.catalog.tombstone(f"s{i:05d}", 9)
    world.add([5], revision=1)  # a replay of an unchanged version: no change
    after = _current(world)
    v2 = store.create("v2", world.catalog, world.settings)

    expected = {
        **{s: "added" for s in after.keys() - before.keys()},
        **{s: "removed" for s in before.keys() - after.keys()},
        **{s: "changed" for s in before.keys() & after.keys() if before[s] != after[s]},
    }
    changes = v2.changes().to_pylist()
    assert {r["sample_id"]: r["change"] for r in changes} == expected
    assert v2.meta.parent == "v1"
    assert v2.meta.diff == {
        kind: sum(1 for c in expected.values() if c == kind)
        for kind in ("added", "removed", "changed")
    }
    # The same diff from the CLI's path (two manifests), and splits never moved.
    from labelflow.snapshots import diff as diffs

    again = diffs.diff(store.open("v1").manifest(), store.open("v2").manifest())
    assert again.to_pylist() == changes
    for row in changes:
        if row["change"] == "changed":
            assert row["old_split"] == row["new_split"]


def test_no_sample_changes_split_when_twenty_percent_more_arrive(world: World) -> None:
    world.add(range(300))
    store = SnapshotStore.from_settings(world.settings)
    v1 = store.create("v1", world.catalog, world.settings).manifest(["sample_id", "split"])
    world.add(range(300, 360))
    v2 = store.create("v2", world.catalog, world.settings).manifest(["sample_id", "split"])
    old = dict(zip(v1["sample_id"].to_pylist(), v1["split"].to_pylist(), strict=True))
    new = dict(zip(v2["sample_id"].to_pylist(), v2["split"].to_pylist(), strict=True))
    assert {s: new[s] for s in old} == old
    assert len(new) == 360


def test_a_failing_gate_refuses_with_reasons_and_force_is_recorded(world: World) -> None:
    world.add(range(20), classes=("building",))
    world.add(range(20, 22), classes=("building",), failed_check=True)
    store = SnapshotStore.from_settings(world.settings)
    with pytest.raises(SnapshotRefused) as refused:
        store.create("v1", world.catalog, world.settings)
    failed = {g.code: g.message for g in refused.value.failed}
    assert set(failed) == {"gate.min_samples_per_class", "gate.failed_members"}
    assert "road (0 samples)" in failed["gate.min_samples_per_class"]
    assert "tree (0 samples)" in failed["gate.min_samples_per_class"]
    assert "2 member(s)" in failed["gate.failed_members"]
    assert "gate.min_samples_per_class" in refused.value.message
    assert store.names() == [], "a refused snapshot leaves nothing behind"
    assert not store.root.exists() or not any(store.root.iterdir())

    forced = store.create("v1", world.catalog, world.settings, force=True)
    assert forced.meta.forced is True
    assert forced.meta.overridden == ["gate.min_samples_per_class", "gate.failed_members"]
    statuses = {g.code: g.status for g in forced.meta.gates}
    assert statuses["gate.quarantine_share"] == "not_measured"
    assert statuses["gate.class_shift"] == "not_measured", "no parent"


def test_class_shift_against_the_parent_is_gated(world: World) -> None:
    lenient = world.settings.model_copy(
        update={"snapshots": SnapshotSettings(gates=GateRules(min_samples_per_class=0))}
    )
    world.add(range(30), classes=("building",))
    store = SnapshotStore.from_settings(lenient)
    store.create("v1", world.catalog, lenient)
    world.add(range(30), revision=2, classes=("tree",))
    with pytest.raises(SnapshotRefused) as refused:
        store.create("v2", world.catalog, lenient)
    shift = next(g for g in refused.value.failed if g.code == "gate.class_shift")
    assert shift.value == pytest.approx(1.0)
    assert store.names() == ["v1"]


def test_a_crash_after_the_manifest_is_written_leaves_nothing_visible(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    world.add(range(20))
    store = SnapshotStore.from_settings(world.settings)
    written: list[Path] = []

    def crash(path: Path, meta: object) -> None:
        written.extend(path.parent.iterdir())
        raise RuntimeError("killed while writing the metadata")

    monkeypatch.setattr(store_module, "_write_metadata", crash)
    with pytest.raises(RuntimeError, match="killed"):
        store.create("v1", world.catalog, world.settings)
    assert {p.name for p in written} >= {"manifest.parquet", "diff.parquet"}
    assert store.names() == []
    assert list(store.root.iterdir()) == [], "the temporary directory is gone too"
    with pytest.raises(SnapshotError, match="no snapshot"):
        store.open("v1")
    monkeypatch.undo()
    assert store.create("v1", world.catalog, world.settings).meta.stats.samples == 20


def test_a_killed_create_leaves_only_a_hidden_directory(world: World) -> None:
    world.add(range(5))
    store = SnapshotStore.from_settings(world.settings)
    leftover = store.root / ".tmp-v1-abcd"
    leftover.mkdir(parents=True)
    (leftover / "manifest.parquet").write_bytes(b"half")
    assert store.names() == [] and store.list() == []
    store.create("v1", world.catalog, world.settings)
    assert store.names() == ["v1"]


def test_the_cli_creates_lists_shows_and_diffs(world: World) -> None:
    from labelflow.cli import app

    env = {
        "LABELFLOW_CATALOG_URL": world.settings.resolved_catalog_url,
        "LABELFLOW_BLOB_URL": world.settings.resolved_blob_url,
        "LABELFLOW_TAXONOMY": '{"classes": {"building": 1, "road": 2, "tree": 3}}',
    }
    base = ["--data-dir", str(world.settings.data_dir), "snapshot"]
    runner = CliRunner()
    world.add(range(30))
    created = runner.invoke(app, [*base, "create", "v1"], env=env)
    assert created.exit_code == 0, created.output
    world.add(range(30, 36))
    assert runner.invoke(app, [*base, "create", "v2"], env=env).exit_code == 0
    again = runner.invoke(app, [*base, "create", "v2"], env=env)
    assert again.exit_code != 0
    listed = runner.invoke(app, [*base, "list"], env=env)
    assert "v1" in listed.output and "v2" in listed.output
    shown = runner.invoke(app, [*base, "show", "v2"], env=env)
    assert shown.exit_code == 0 and "gate.class_shift" in shown.output
    diffed = runner.invoke(app, [*base, "diff", "v1", "v2"], env=env)
    assert "6 added, 0 removed, 0 changed" in diffed.output
    excluded = SnapshotStore.from_settings(world.settings).open("v2").meta.stats.splits
    assert set(excluded) <= {"train", "val", "test", EXCLUDED}


def test_manifest_columns_hold_the_catalogued_values(world: World) -> None:
    world.add(range(12))
    world.add(range(12, 15), failed_check=True, classes=("road",))
    lenient = world.settings.model_copy(
        update={"snapshots": SnapshotSettings(gates=GateRules(max_failed_members=3))}
    )
    snapshot = SnapshotStore.from_settings(lenient).create("v1", world.catalog, lenient)
    rows = snapshot.manifest().to_pylist()
    assert len(rows) == 15
    for row in rows:
        version = world.catalog.get(row["sample_id"])
        assert version is not None
        assert (row["minx"], row["miny"], row["maxx"], row["maxy"]) == version.bounds
        assert (row["width"], row["height"], row["crs"]) == (
            version.width,
            version.height,
            version.crs,
        )
        assert dict(row["class_pixels"]) == version.class_pixels
        assert row["failed_checks"] == [c.code for c in version.checks if not c.passed]
        assert (row["source"], row["image_uri"], row["code_version"], row["config_hash"]) == (
            version.lineage.source,
            version.lineage.image_uri,
            version.lineage.code_version,
            version.lineage.config_hash,
        )
    newest = max(row["committed_at"] for row in rows)
    assert newest == snapshot.meta.catalog.last_version_at
    assert snapshot.meta.stats.failed_members == 3
