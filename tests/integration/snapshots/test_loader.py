"""The snapshot reader returns exactly the stored arrays, and resumes where it stopped."""

from __future__ import annotations

import hashlib
import itertools

import numpy as np
import pytest
import rasterio
from rasterio.io import MemoryFile

from labelflow.dataset import open_snapshot
from labelflow.errors import LabelflowError
from labelflow.snapshots.store import SnapshotStore

from .conftest import World

pytestmark = pytest.mark.integration


def _decode(data: bytes) -> np.ndarray:
    with MemoryFile(data) as memfile, memfile.open() as src:
        return src.read()


@pytest.fixture
def snapshot(world: World) -> str:
    world.add(range(120))
    SnapshotStore.from_settings(world.settings).create("v1", world.catalog, world.settings)
    return "v1"


@pytest.mark.parametrize("cache", [False, True], ids=["store", "cache"])
def test_every_sample_is_exactly_the_stored_arrays(
    world: World, snapshot: str, cache: bool
) -> None:
    manifest = SnapshotStore.from_settings(world.settings).open(snapshot).manifest()
    expected = {r["sample_id"]: r for r in manifest.to_pylist()}
    seen = set()
    for split in ("train", "val", "test", "excluded"):
        if split not in set(manifest.column("split").to_pylist()):
            continue
        for image, mask, meta in open_snapshot(
            snapshot, split, settings=world.settings, cache=cache, threads=3
        ):
            row = expected[meta["sample_id"]]
            assert meta["split"] == split == row["split"]
            for array, key in ((image, row["image_hash"]), (mask[np.newaxis], row["mask_hash"])):
                data = world.blobs.get(key)
                assert hashlib.sha256(data).hexdigest() == key
                stored = _decode(data)
                assert array.dtype == stored.dtype and np.array_equal(array, stored)
            seen.add(meta["sample_id"])
    assert seen == set(expected)
    if cache:
        assert any((world.settings.data_dir / "cache" / "blobs").rglob("*"))


@pytest.mark.parametrize("seed", [None, 7])
def test_resuming_yields_exactly_the_remaining_samples(
    world: World, snapshot: str, seed: int | None
) -> None:
    reader = open_snapshot(snapshot, None, settings=world.settings, seed=seed)
    everything = [m["sample_id"] for _, _, m in reader]
    assert len(everything) == 120 and len(set(everything)) == 120
    assert (everything == sorted(everything)) == (seed is None)

    first = open_snapshot(snapshot, None, settings=world.settings, seed=seed, threads=4)
    head = [m["sample_id"] for _, _, m in itertools.islice(first, 37)]
    state = first.state_dict()
    assert state["position"] == 37

    resumed = open_snapshot(snapshot, None, settings=world.settings, seed=seed)
    resumed.load_state_dict(state)
    rest = [m["sample_id"] for _, _, m in resumed]
    assert head + rest == everything


def test_a_state_from_another_order_is_refused(world: World, snapshot: str) -> None:
    state = open_snapshot(snapshot, None, settings=world.settings, seed=1).state_dict()
    with pytest.raises(LabelflowError, match="seed"):
        open_snapshot(snapshot, None, settings=world.settings, seed=2).load_state_dict(state)


def test_the_reader_matches_rasterio_on_the_blob_files(world: World, snapshot: str) -> None:
    reader = open_snapshot(snapshot, None, settings=world.settings)
    image, mask, meta = reader[5]
    with rasterio.open(world.blobs.path(meta["image_hash"])) as src:
        assert np.array_equal(image, src.read())
    assert mask.ndim == 2 and image.shape[1:] == mask.shape


def test_torch_dataset_through_a_dataloader_with_workers(world: World, snapshot: str) -> None:
    torch = pytest.importorskip("torch")
    from torch.utils.data import DataLoader

    from labelflow.torch import SnapshotDataset

    data = SnapshotDataset(snapshot, None, settings=world.settings)
    reader = open_snapshot(snapshot, None, settings=world.settings)
    seen = 0
    for batch in DataLoader(data, batch_size=8, num_workers=2):
        for image, mask, sample_id in zip(
            batch["image"], batch["mask"], batch["sample_id"], strict=True
        ):
            expected = reader[seen]
            assert expected.metadata["sample_id"] == sample_id
            assert torch.equal(image, torch.from_numpy(expected.image))
            assert torch.equal(mask, torch.from_numpy(expected.mask.astype("int64")))
            seen += 1
    assert seen == len(reader) == 120
