"""Exporting a snapshot for tools that do not read labelflow manifests.

- ``dir``: ``<out>/<split>/<sample>.image.tif`` and ``.mask.tif`` (the blobs themselves,
  hard-linked where the file system allows, else copied), ``samples.jsonl`` (one manifest row
  per sample with its file paths) and ``snapshot.json``.
- ``coco``: the same image files under ``images/`` plus ``annotations/<split>.json`` in COCO
  instance format; each connected region of a class in the mask becomes one annotation
  (polygon of its outer ring in pixel coordinates, bbox, pixel area). COCO polygons have no
  holes: a region's holes are part of its polygon, and its area counts only its own pixels.
- ``webdataset``: ``<split>-000000.tar`` shards of ``SHARD_SIZE`` samples, each sample as
  ``<key>.image.tif``, ``<key>.mask.tif`` and ``<key>.json`` (its manifest row), in manifest
  order; a key is the sample's file stem with dots replaced (WebDataset splits names at the
  first dot).

Each is written to a temporary directory beside ``out`` and renamed onto it at the end, so
an interrupted export leaves no half-written directory under the name.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import tarfile
import tempfile
from hashlib import sha256
from pathlib import Path
from typing import Any, Literal

import numpy as np
import rasterio
from rasterio.features import shapes
from shapely.geometry import shape

from labelflow.catalog.blobs import BlobStore
from labelflow.errors import LabelflowError
from labelflow.snapshots.store import META, Snapshot

Format = Literal["dir", "coco", "webdataset"]

SHARD_SIZE = 1000
"""Samples per WebDataset shard: about 400 MB of 512x512 RGB chips, a size object stores
and loaders stream well."""

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def export(snapshot: Snapshot, blobs: BlobStore, out: Path, fmt: Format) -> int:
    """Write ``snapshot`` to the new directory ``out`` as ``fmt``; returns the sample count."""
    if out.exists():
        raise LabelflowError(f"{out} exists; an export writes a new directory")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        rows = snapshot.manifest().to_pylist()
        shutil.copyfile(snapshot.path / META, tmp / META)
        if fmt == "dir":
            _export_dir(rows, blobs, tmp)
        elif fmt == "coco":
            _export_coco(rows, blobs, tmp, snapshot.meta.taxonomy)
        elif fmt == "webdataset":
            _export_webdataset(rows, blobs, tmp)
        else:
            raise LabelflowError(f"unknown export format {fmt!r}", hint="dir, coco or webdataset")
        os.chmod(tmp, 0o755)
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return len(rows)


def file_stem(sample_id: str) -> str:
    """A file name for a sample id: readable, and unique even when two ids differ only in
    characters a file name cannot hold (the hash suffix tells them apart)."""
    return f"{_UNSAFE.sub('_', sample_id)[:80]}-{sha256(sample_id.encode()).hexdigest()[:8]}"


def _place(blobs: BlobStore, key: str, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(blobs.path(key), dest)
    except OSError:  # another file system, or links not allowed: copy
        shutil.copyfile(blobs.path(key), dest)


def _export_dir(rows: list[dict[str, Any]], blobs: BlobStore, out: Path) -> None:
    with (out / "samples.jsonl").open("w") as index:
        for row in rows:
            stem = Path(row["split"]) / file_stem(row["sample_id"])
            image, mask = f"{stem}.image.tif", f"{stem}.mask.tif"
            _place(blobs, row["image_hash"], out / image)
            _place(blobs, row["mask_hash"], out / mask)
            entry = {**_plain(row), "image": image, "mask": mask}
            index.write(json.dumps(entry, default=str) + "\n")


def _export_coco(
    rows: list[dict[str, Any]], blobs: BlobStore, out: Path, taxonomy: dict[str, int]
) -> None:
    categories = [{"id": i, "name": n} for n, i in sorted(taxonomy.items(), key=lambda t: t[1])]
    by_split: dict[str, dict[str, Any]] = {}
    next_annotation = 1
    for image_id, row in enumerate(rows, start=1):
        file_name = f"images/{file_stem(row['sample_id'])}.tif"
        _place(blobs, row["image_hash"], out / file_name)
        doc = by_split.setdefault(
            row["split"], {"images": [], "annotations": [], "categories": categories}
        )
        doc["images"].append(
            {
                "id": image_id,
                "file_name": file_name,
                "width": row["width"],
                "height": row["height"],
                "sample_id": row["sample_id"],
                "revision": row["revision"],
            }
        )
        with rasterio.open(blobs.path(row["mask_hash"])) as src:
            mask = src.read(1)
        for annotation in _regions(mask, set(taxonomy.values())):
            doc["annotations"].append({"id": next_annotation, "image_id": image_id, **annotation})
            next_annotation += 1
    (out / "annotations").mkdir()
    for split, doc in by_split.items():
        (out / "annotations" / f"{split}.json").write_text(json.dumps(doc))


def _export_webdataset(rows: list[dict[str, Any]], blobs: BlobStore, out: Path) -> None:
    by_split: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_split.setdefault(row["split"], []).append(row)
    for split, members in by_split.items():
        for shard, start in enumerate(range(0, len(members), SHARD_SIZE)):
            with tarfile.open(out / f"{split}-{shard:06d}.tar", "w") as tar:
                for row in members[start : start + SHARD_SIZE]:
                    key = file_stem(row["sample_id"]).replace(".", "_")
                    tar.add(blobs.path(row["image_hash"]), f"{key}.image.tif")
                    tar.add(blobs.path(row["mask_hash"]), f"{key}.mask.tif")
                    meta = json.dumps(_plain(row), default=str).encode()
                    info = tarfile.TarInfo(f"{key}.json")
                    info.size = len(meta)
                    tar.addfile(info, io.BytesIO(meta))


def _regions(mask: np.ndarray, classes: set[int]) -> list[dict[str, Any]]:
    """One COCO annotation per 4-connected region of each class value in ``mask``."""
    found = []
    for geometry, value in shapes(mask, mask=np.isin(mask, list(classes)), connectivity=4):
        ring = geometry["coordinates"][0]
        polygon = shape(geometry)
        minx, miny, maxx, maxy = polygon.bounds
        found.append(
            {
                "category_id": int(value),
                "segmentation": [[c for p in ring for c in p]],
                "bbox": [minx, miny, maxx - minx, maxy - miny],
                "area": polygon.area,
                "iscrowd": 0,
            }
        )
    return found


def _plain(row: dict[str, Any]) -> dict[str, Any]:
    """A manifest row as JSON-friendly values (the map of class pixels as a dict)."""
    out = dict(row)
    out["class_pixels"] = dict(row["class_pixels"] or [])
    return out
