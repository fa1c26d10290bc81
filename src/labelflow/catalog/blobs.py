"""A content-addressed blob store, and the one encoding of raster artifacts written to it.

The key of a blob is the sha256 of its bytes, so writing is idempotent by construction: a
stage that is killed after writing and redoes the record writes the same key again, and two
workers writing the same chip at once write the same bytes to the same place. A blob is
written to a temporary file in the destination directory, flushed to disk, then renamed onto
its key — a reader (or a crash) never sees half a blob. Keys fan out into two directory levels
(``ab/cd/abcd…``) so no directory grows to millions of entries.

Raster artifacts (image chips and label masks) are stored as GeoTIFF rather than PNG plus a
sidecar: one self-describing file keeps the CRS, transform and nodata with the pixels (any GIS
tool opens it; no pair of files to keep consistent), and it holds any band count and dtype,
where PNG is limited to 1 to 4 bands of 8/16-bit integers. :func:`encode_geotiff` writes it
deterministically — no timestamp or software tag, fixed compression settings — so the same
array and georeference give the same bytes and hence the same key (given the same GDAL/zlib
build; a different build may compress differently, which costs a new key, never a wrong one).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Self

import numpy as np
from affine import Affine
from rasterio.crs import CRS
from rasterio.io import MemoryFile

from labelflow.config import Settings

FILE_SCHEME = "file://"


def blob_key(data: bytes) -> str:
    """The key of ``data``: its sha256 in hex."""
    return hashlib.sha256(data).hexdigest()


def atomic_write(dest: Path, data: bytes) -> None:
    """Write ``data`` to ``dest`` so that readers see all of it or nothing."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name[:8]}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            # Without fsync a power loss after the rename can leave an empty file under a
            # name that claims to hold these bytes.
            os.fsync(out.fileno())
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class BlobStore:
    """Blobs under a local directory ``root`` (a path or a ``file://`` URL)."""

    def __init__(self, root: str | Path) -> None:
        root = str(root)
        if "://" in root and not root.startswith(FILE_SCHEME):
            raise ValueError(f"unsupported blob store URL {root!r}: only local paths for now")
        self.root = Path(root.removeprefix(FILE_SCHEME))

    @classmethod
    def from_settings(cls, settings: Settings) -> Self:
        return cls(settings.resolved_blob_url)

    def path(self, key: str) -> Path:
        if len(key) != 64 or any(c not in "0123456789abcdef" for c in key):
            raise ValueError(f"not a blob key: {key!r}")
        return self.root / key[:2] / key[2:4] / key

    def put(self, data: bytes) -> str:
        """Store ``data`` (if not already there) and return its key."""
        key = blob_key(data)
        dest = self.path(key)
        if dest.exists():
            return key
        atomic_write(dest, data)
        return key

    def get(self, key: str) -> bytes:
        """The bytes under ``key``; :class:`FileNotFoundError` if there are none."""
        return self.path(key).read_bytes()

    def exists(self, key: str) -> bool:
        return self.path(key).exists()

    def put_raster(
        self,
        pixels: np.ndarray,
        *,
        crs: str | None,
        transform: Affine,
        nodata: float | None = None,
    ) -> str:
        """Encode a raster with :func:`encode_geotiff` and store it; returns the key."""
        return self.put(encode_geotiff(pixels, crs=crs, transform=transform, nodata=nodata))


def encode_geotiff(
    pixels: np.ndarray,
    *,
    crs: str | None,
    transform: Affine,
    nodata: float | None = None,
) -> bytes:
    """A deterministic GeoTIFF of ``pixels`` (``(bands, h, w)`` or ``(h, w)``).

    Deflate with a predictor (lossless: a mask must come back exactly), in 256-pixel tiles so
    large chips can be read in windows.
    """
    if pixels.ndim == 2:
        pixels = pixels[np.newaxis]
    bands, height, width = pixels.shape
    profile = {
        "driver": "GTiff",
        "count": bands,
        "height": height,
        "width": width,
        "dtype": pixels.dtype.name,
        "crs": CRS.from_user_input(crs) if crs else None,
        "transform": transform,
        "nodata": nodata,
        "compress": "deflate",
        "predictor": 2 if np.issubdtype(pixels.dtype, np.integer) else 3,
        "interleave": "pixel",
        "tiled": True,
        "blockxsize": 256,
        "blockysize": 256,
    }
    with MemoryFile() as memfile:
        with memfile.open(**profile) as dst:
            dst.write(pixels)
        return bytes(memfile.read())
