"""Content-addressed blobs: same bytes, same key; atomic, idempotent, deterministic rasters;
deferred stores publish a batch at one durability point."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.io import MemoryFile

from labelflow.catalog import blobs
from labelflow.catalog.blobs import BlobStore, encode_geotiff
from labelflow.config import Settings

TRANSFORM = Affine(0.5, 0.0, 1_000.0, 0.0, -0.5, 2_000.0)


def test_key_is_sha256_and_layout_fans_out(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    key = store.put(b"hello")
    assert key == hashlib.sha256(b"hello").hexdigest()
    assert store.path(key) == tmp_path / key[:2] / key[2:4] / key
    assert store.get(key) == b"hello"
    assert store.exists(key)


def test_concurrent_puts_of_the_same_bytes_leave_one_complete_blob(tmp_path: Path) -> None:
    store = BlobStore(f"file://{tmp_path}")
    data = bytes(range(256)) * 4096
    with ThreadPoolExecutor(max_workers=8) as pool:
        keys = set(pool.map(lambda _: store.put(data), range(32), timeout=60))
    assert len(keys) == 1
    key = keys.pop()
    assert store.get(key) == data
    leftovers = [p for p in tmp_path.rglob("*") if p.is_file() and p.name != key]
    assert leftovers == [], "temporary files must not outlive a put"


def test_store_defaults_to_the_data_dir(tmp_path: Path) -> None:
    store = BlobStore.from_settings(Settings(data_dir=tmp_path))
    assert store.root == (tmp_path / "blobs").resolve()


def test_rejects_non_keys_and_remote_urls(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a blob key"):
        BlobStore(tmp_path).path("../../etc/passwd")
    with pytest.raises(ValueError, match="unsupported"):
        BlobStore("s3://bucket/blobs")


def test_missing_blob_raises_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        BlobStore(tmp_path).get("0" * 64)


def _encode_in_subprocess() -> bytes:
    code = (
        "import sys, numpy as np; from affine import Affine;"
        "from labelflow.catalog.blobs import encode_geotiff;"
        "a = (np.arange(3 * 300 * 200) % 251).astype(np.uint8).reshape(3, 300, 200);"
        "sys.stdout.buffer.write(encode_geotiff(a, crs='EPSG:3857',"
        " transform=Affine(0.5, 0.0, 1000.0, 0.0, -0.5, 2000.0), nodata=0))"
    )
    return subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, timeout=60
    ).stdout


def test_geotiff_encoding_is_deterministic_across_processes() -> None:
    pixels = (np.arange(3 * 300 * 200) % 251).astype(np.uint8).reshape(3, 300, 200)
    here = encode_geotiff(pixels, crs="EPSG:3857", transform=TRANSFORM, nodata=0)
    assert here == encode_geotiff(pixels.copy(), crs="EPSG:3857", transform=TRANSFORM, nodata=0)
    assert here == _encode_in_subprocess(), "a second process must write the same bytes"
    changed = pixels.copy()
    changed[0, 0, 0] += 1
    assert encode_geotiff(changed, crs="EPSG:3857", transform=TRANSFORM, nodata=0) != here


def test_raster_blob_keeps_pixels_and_georeference(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    mask = np.zeros((64, 48), dtype=np.uint8)
    mask[10:20, 5:9] = 3
    key = store.put_raster(mask, crs="EPSG:32618", transform=TRANSFORM)
    with MemoryFile(store.get(key)) as memfile, memfile.open() as src:
        assert src.crs == rasterio.crs.CRS.from_epsg(32618)
        assert src.transform == TRANSFORM
        assert src.count == 1 and src.nodata is None
        np.testing.assert_array_equal(src.read(1), mask)


def _temp_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob(".*.tmp") if p.is_file())


def test_deferred_put_is_invisible_until_sync_publishes_it(tmp_path: Path) -> None:
    store = BlobStore(tmp_path, deferred=True)
    key = store.put(b"chip bytes")
    assert not store.exists(key)
    with pytest.raises(FileNotFoundError):
        store.get(key)
    assert len(_temp_files(tmp_path)) == 1
    assert store.sync() == 1
    assert store.get(key) == b"chip bytes"
    assert _temp_files(tmp_path) == []
    assert store.sync() == 0, "published blobs are not published again"


def test_deferred_sync_is_one_durability_point_for_the_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    monkeypatch.setattr(blobs, "_SYNCFS", lambda fd: calls.append(fd) or 0)
    store = BlobStore(tmp_path, deferred=True)
    for i in range(20):
        store.put(f"blob {i}".encode())
    assert store.sync() == 20
    assert len(calls) == 2, "one flush of the data, one of the renames"


def test_deferred_sync_without_syncfs_fsyncs_each_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(blobs, "_SYNCFS", None)
    store = BlobStore(tmp_path, deferred=True)
    keys = [store.put(f"blob {i}".encode()) for i in range(5)]
    assert store.sync() == 5
    assert [store.get(k) for k in keys] == [f"blob {i}".encode() for i in range(5)]


def test_deferred_same_bytes_are_written_once(tmp_path: Path) -> None:
    store = BlobStore(tmp_path, deferred=True)
    first = store.put(b"same")
    assert store.put(b"same") == first
    assert len(_temp_files(tmp_path)) == 1, "a pending key is not written again"
    assert store.sync() == 1
    assert store.put(b"same") == first
    assert _temp_files(tmp_path) == [], "a stored key is not written again"
    assert store.sync() == 0


def test_discard_deletes_the_pending_batch(tmp_path: Path) -> None:
    store = BlobStore(tmp_path, deferred=True)
    kept = store.put(b"committed")
    store.sync()
    dropped = [store.put(f"aborted {i}".encode()) for i in range(3)]
    assert store.discard() == 3
    assert _temp_files(tmp_path) == []
    assert store.sync() == 0
    assert store.exists(kept) and not any(store.exists(k) for k in dropped)


def test_many_threads_putting_deferred_publish_each_blob_once(tmp_path: Path) -> None:
    store = BlobStore(tmp_path, deferred=True)
    payloads = [f"blob {i % 40}".encode() * 1000 for i in range(400)]  # each 10 times
    with ThreadPoolExecutor(max_workers=16) as pool:
        keys = list(pool.map(store.put, payloads, timeout=60))
    assert len(_temp_files(tmp_path)) == 40
    assert store.sync() == 40
    assert all(store.get(k) == p for k, p in zip(keys, payloads, strict=True))
    assert _temp_files(tmp_path) == []


def test_sync_with_nothing_pending_is_a_no_op(tmp_path: Path) -> None:
    root = tmp_path / "not-created-yet"
    assert BlobStore(root, deferred=True).sync() == 0
    assert BlobStore(root).sync() == 0
    assert not root.exists()


def test_sweep_removes_stale_temp_files_only(tmp_path: Path) -> None:
    store = BlobStore(tmp_path, deferred=True)
    key = store.put(b"live batch")
    (live,) = _temp_files(tmp_path)
    stale = live.parent / ".deadbeef.abc123.tmp"
    stale.write_bytes(b"left by a killed worker")
    fresh = live.parent / ".deadbeef.def456.tmp"
    fresh.write_bytes(b"another worker's batch in flight")
    hour_ago = time.time() - 7200
    for path in (live, stale):
        os.utime(path, (hour_ago, hour_ago))
    assert store.sweep_temp(older_than_s=3600) == 1
    assert not stale.exists() and fresh.exists() and live.exists()
    assert store.sync() == 1 and store.exists(key)


def test_deferred_store_from_settings(tmp_path: Path) -> None:
    store = BlobStore.from_settings(Settings(data_dir=tmp_path), deferred=True)
    assert store.deferred and store.root == (tmp_path / "blobs").resolve()


@pytest.mark.parametrize(
    ("dtype", "shape", "nodata"),
    [(np.uint16, (4, 300, 200), 0), (np.float32, (1, 700, 530), float("nan"))],
)
def test_rasters_of_any_dtype_and_size_round_trip_exactly(
    dtype: type, shape: tuple[int, int, int], nodata: float
) -> None:
    rng = np.random.default_rng(5)
    pixels = (rng.random(shape) * 4000).astype(dtype)
    if np.issubdtype(dtype, np.floating):
        pixels[0, :10] = np.nan
    data = encode_geotiff(pixels, crs="EPSG:3857", transform=TRANSFORM, nodata=nodata)
    with MemoryFile(data) as memfile, memfile.open() as src:
        np.testing.assert_array_equal(src.read(), pixels)
        assert src.compression is not None
        assert src.profile["tiled"] == (max(shape[1:]) > blobs.STRIP_MAX_SIDE)
