"""Reading a snapshot for training: (image, mask, metadata) as numpy arrays, no framework.

``open_snapshot("v3", split="train")`` gives a :class:`SnapshotReader` over the split's rows of
the snapshot's manifest, in sample-id order (or a seeded permutation of it). It iterates
(``for image, mask, meta in reader``) and also reads by index (``reader[i]``, what a PyTorch
map-style dataset needs: see :mod:`labelflow.torch`). Images are ``(bands, height, width)``,
masks ``(height, width)`` of class indices, exactly the arrays that were stored: blobs are
content-addressed, so the manifest's hash pins the bytes.

Resuming: ``reader.state_dict()`` says how far iteration got (and over what: snapshot, split,
seed); ``load_state_dict`` on a fresh reader continues with exactly the samples not yet
yielded. A state from another snapshot, split or order is refused rather than silently
misapplied.

Speed: iteration decodes ahead on a few threads (GDAL releases the GIL while decoding), in
order, with GDAL's directory scan for sidecar files switched off in those threads. The local blob
cache (:class:`BlobCache`) keeps a verified copy of every blob read from a store that is not
a local directory; over a local store it is off by default, since it would only copy files
that are already local (``cache=True`` forces it, e.g. onto a faster disk).

This module imports neither torch nor anything of the pipeline's runtime.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import rasterio

from labelflow.catalog.blobs import BlobStore, atomic_write
from labelflow.config import Settings, get_settings
from labelflow.errors import LabelflowError
from labelflow.snapshots.store import Snapshot, SnapshotStore

READ_AHEAD_GDAL = {"GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR"}

READ_AHEAD = 8
"""Samples decoded ahead of the one being yielded: enough to keep the threads busy, bounded so
a slow consumer does not pile decoded chips up in memory."""

METADATA_COLUMNS = [
    "sample_id",
    "revision",
    "image_hash",
    "mask_hash",
    "split",
    "width",
    "height",
    "crs",
    "minx",
    "miny",
    "maxx",
    "maxy",
]


class Sample(NamedTuple):
    image: np.ndarray
    mask: np.ndarray
    metadata: dict[str, Any]


class BlobCache:
    """Verified local copies of blobs, in the blob store's own fan-out layout under ``root``.

    A blob is copied on its first read: its sha256 is checked against its key (a wrong or
    torn download never enters the cache) and it is written atomically, so concurrent
    readers (DataLoader workers) at worst copy the same blob twice.
    """

    def __init__(self, root: Path, source: BlobStore) -> None:
        self.local = BlobStore(root)
        self.source = source

    def path(self, key: str) -> Path:
        path = self.local.path(key)
        if not path.exists():
            data = self.source.get(key)
            if hashlib.sha256(data).hexdigest() != key:
                raise LabelflowError(f"blob {key} does not match its hash in the blob store")
            atomic_write(path, data)
        return path


class SnapshotReader:
    """The samples of one split of one snapshot (see the module doc)."""

    def __init__(
        self,
        snapshot: Snapshot,
        split: str | None,
        blobs: BlobStore,
        *,
        cache: BlobCache | None = None,
        seed: int | None = None,
        threads: int = 2,
    ) -> None:
        self.snapshot = snapshot
        self.split = split
        self.seed = seed
        self.threads = max(1, threads)
        self._blobs = blobs
        self._cache = cache
        rows = snapshot.manifest(METADATA_COLUMNS)
        if split is not None:
            known = set(snapshot.meta.stats.splits)
            if split not in known:
                raise LabelflowError(
                    f"snapshot {snapshot.name!r} has no split {split!r}",
                    hint=f"its splits: {', '.join(sorted(known)) or 'none'}",
                )
            rows = rows.filter(pc.equal(rows.column("split"), split))
        if seed is not None:
            order = np.random.default_rng(seed).permutation(rows.num_rows)
            rows = rows.take(pa.array(order))
        self._rows = rows
        # Python lists once: converting an Arrow row per sample costs more than its decode.
        self._columns = {name: rows.column(name).to_pylist() for name in rows.column_names}
        self._image_keys = self._columns["image_hash"]
        self._mask_keys = self._columns["mask_hash"]
        self.position = 0

    def __len__(self) -> int:
        return self._rows.num_rows

    def __getitem__(self, index: int) -> Sample:
        if not -len(self) <= index < len(self):
            raise IndexError(index)
        index %= len(self)
        return Sample(
            self._read(self._image_keys[index]),
            self._read(self._mask_keys[index])[0],
            {name: values[index] for name, values in self._columns.items()},
        )

    def __iter__(self) -> Iterator[Sample]:
        """The samples from :attr:`position` on; the position moves as each is yielded."""
        start = self.position
        if self.threads == 1:
            for index in range(start, len(self)):
                sample = self[index]
                self.position = index + 1
                yield sample
            return
        with ThreadPoolExecutor(
            self.threads, thread_name_prefix="labelflow-read", initializer=_quiet_gdal
        ) as pool:
            ahead: list[Future[Sample]] = []
            next_index = start
            for index in range(start, len(self)):
                while next_index < len(self) and next_index < index + READ_AHEAD:
                    ahead.append(pool.submit(self.__getitem__, next_index))
                    next_index += 1
                sample = ahead.pop(0).result()
                self.position = index + 1
                yield sample
            for future in ahead:
                future.cancel()

    def state_dict(self) -> dict[str, Any]:
        return {
            "snapshot": self.snapshot.name,
            "manifest": self.snapshot.meta.files.get("manifest.parquet"),
            "split": self.split,
            "seed": self.seed,
            "position": self.position,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        mine = self.state_dict()
        for key in ("snapshot", "manifest", "split", "seed"):
            if state.get(key) != mine[key]:
                raise LabelflowError(
                    f"cannot resume: the saved state is for {key} {state.get(key)!r}, "
                    f"this reader reads {mine[key]!r}"
                )
        position = int(state["position"])
        if not 0 <= position <= len(self):
            raise LabelflowError(f"cannot resume at {position}: the split has {len(self)}")
        self.position = position

    def _read(self, key: str) -> np.ndarray:
        path = self._cache.path(key) if self._cache is not None else self._blobs.path(key)
        with rasterio.open(path) as src:
            return src.read()


def _quiet_gdal() -> None:
    """Thread initializer of the read-ahead pool: GDAL in these threads skips listing a
    blob's directory for sidecar files a blob store never has. Entered for the thread's
    life, which is the pool's: user code in other threads keeps its own GDAL settings."""
    rasterio.Env(**READ_AHEAD_GDAL).__enter__()


def open_snapshot(
    name: str,
    split: str | None = "train",
    *,
    settings: Settings | None = None,
    seed: int | None = None,
    cache: bool | None = None,
    threads: int = 2,
) -> SnapshotReader:
    """A reader over ``split`` (``None``: every member, excluded ones too) of snapshot
    ``name``, in sample-id order or the permutation ``seed`` picks."""
    settings = settings or get_settings()
    snapshot = SnapshotStore.from_settings(settings).open(name)
    blobs = BlobStore.from_settings(settings)
    local = "://" not in settings.resolved_blob_url or settings.resolved_blob_url.startswith(
        "file://"
    )
    use_cache = cache if cache is not None else not local
    blob_cache = None
    if use_cache:
        root = settings.snapshots.cache_dir or settings.data_dir / "cache" / "blobs"
        blob_cache = BlobCache(Path(root), blobs)
    return SnapshotReader(snapshot, split, blobs, cache=blob_cache, seed=seed, threads=threads)
