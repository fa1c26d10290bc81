"""Content-addressed blobs: same bytes, same key; atomic, idempotent, deterministic rasters."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.io import MemoryFile

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
