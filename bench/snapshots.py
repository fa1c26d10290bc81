"""Snapshots: loader throughput against reading the same files directly, and the time and
peak memory of creating and diffing a snapshot of a large catalog.

1. **loader**: ``--chips`` 512x512 RGB chips cut at random places from the aerial COG in
   ``../shared/data/imagery/cogeo.tif`` (``--image`` for another) with a class mask each, are
   stored as blobs and committed to a SQLite catalog, and snapshotted. Then the same image and
   mask files are read, in manifest order, (a) directly — ``rasterio.open(path).read()``, the
   decoder the loader uses, one process — and (b) through ``labelflow.dataset.open_snapshot``
   with one thread and with ``--threads``. Each is run ``--repeat`` times and its best run
   kept (every run reads from the page cache, so the comparison is decoder and overhead, not
   the disk). Prints samples/s and the ratio loader / direct (target ≥ 1.0).
2. **catalog scale**: ``--rows`` sample versions (realistic row shape: bounds, four class
   counts, four check results, lineage) are bulk-inserted into a fresh SQLite catalog; then,
   each in a fresh process so its peak memory is its own: ``snapshot create`` of the whole
   catalog; 5 % of the rows are changed (2 % new revisions, 2 % new samples, 1 % deleted)
   and a second snapshot is created (which diffs against the first); and a standalone diff of
   the two manifests. Prints seconds and peak RSS of each.

    .venv/bin/python bench/snapshots.py [--chips 300] [--rows 100000] [--json PATH]

The defaults take about a minute on two cores; ``--rows 1000000`` about eight, most of it
filling the catalog.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import random
import resource
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.windows import Window
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from labelflow.catalog.blobs import BlobStore
from labelflow.catalog.store import Catalog, Deletion, samples, versions
from labelflow.config import Settings
from labelflow.model import CheckResult, Lineage, SampleVersion

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_IMAGE = ROOT.parent / "shared" / "data" / "imagery" / "cogeo.tif"
CLASSES = {"building": 1, "road": 2, "tree": 3, "water": 4}
INSERT_CHUNK = 20_000


def _settings(data_dir: Path) -> Settings:
    return Settings(data_dir=data_dir, taxonomy={"classes": CLASSES})


# --- 1. loader ------------------------------------------------------------------------------
def build_chips(settings: Settings, image: Path, count: int, size: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    blobs = BlobStore.from_settings(settings, deferred=True)
    written = []
    with rasterio.open(image) as src:
        for i in range(count):
            col = int(rng.integers(0, src.width - size))
            row = int(rng.integers(0, src.height - size))
            window = Window(col, row, size, size)
            pixels = src.read(window=window)
            transform = src.window_transform(window)
            mask = np.zeros((size, size), np.uint8)
            for value in CLASSES.values():
                x, y = rng.integers(0, size - 64, 2)
                w, h = rng.integers(16, 200, 2)
                mask[y : y + h, x : x + w] = value
            image_hash = blobs.put_raster(pixels, crs=str(src.crs), transform=transform)
            mask_hash = blobs.put_raster(mask, crs=str(src.crs), transform=transform)
            b = rasterio.transform.array_bounds(size, size, transform)
            written.append(
                _version(
                    f"chip-{i:06d}",
                    1,
                    image_hash,
                    mask_hash,
                    (b[0], b[1], b[2], b[3]),
                    str(src.crs),
                    {n: int((mask == v).sum()) for n, v in CLASSES.items()},
                    size,
                )
            )
    blobs.sync()
    with Catalog(settings.resolved_catalog_url) as catalog:
        catalog.migrate()
        catalog.apply(written)


def _version(
    sample_id: str,
    revision: int,
    image_hash: str,
    mask_hash: str,
    bounds: tuple[float, float, float, float],
    crs: str,
    class_pixels: dict[str, int],
    size: int,
) -> SampleVersion:
    return SampleVersion(
        sample_id=sample_id,
        revision=revision,
        image_hash=image_hash,
        mask_hash=mask_hash,
        width=size,
        height=size,
        crs=crs,
        bounds=bounds,
        class_pixels=class_pixels,
        checks=[CheckResult(code="sample.blank", passed=True, value=0.2, threshold=0.01)],
        lineage=Lineage(
            source="bench",
            task_id=sample_id,
            revision=revision,
            event_id=f"{sample_id}-{revision}",
            image_uri="cogeo.tif",
            image_content_hash="0" * 64,
            code_version="bench",
            config_hash="bench",
        ),
    )


def _best(repeat: int, run: Callable[[], int]) -> tuple[float, int]:
    best = float("inf")
    count = 0
    for _ in range(repeat):
        started = time.perf_counter()
        count = run()
        best = min(best, time.perf_counter() - started)
    return best, count


def bench_loader(settings: Settings, threads: int, repeat: int) -> dict[str, Any]:
    from labelflow.dataset import open_snapshot
    from labelflow.snapshots.store import SnapshotStore

    snapshot = SnapshotStore.from_settings(settings).open("bench")
    blobs = BlobStore.from_settings(settings)
    rows = snapshot.manifest(["image_hash", "mask_hash"]).to_pylist()

    def direct() -> int:
        for row in rows:
            with rasterio.open(blobs.path(row["image_hash"])) as src:
                src.read()
            with rasterio.open(blobs.path(row["mask_hash"])) as src:
                src.read(1)
        return len(rows)

    def loader(n: int) -> Callable[[], int]:
        return lambda: sum(1 for _ in open_snapshot("bench", None, settings=settings, threads=n))

    direct_s, n = _best(repeat, direct)
    one_s, _ = _best(repeat, loader(1))
    many_s, _ = _best(repeat, loader(threads))
    return {
        "samples": n,
        "direct_per_s": round(n / direct_s, 1),
        "loader_1_thread_per_s": round(n / one_s, 1),
        f"loader_{threads}_threads_per_s": round(n / many_s, 1),
        "ratio_1_thread": round(direct_s / one_s, 2),
        f"ratio_{threads}_threads": round(direct_s / many_s, 2),
    }


# --- 2. catalog scale -----------------------------------------------------------------------
def fill_catalog(settings: Settings, rows: int, seed: int) -> None:
    """``rows`` current sample versions, written with bulk inserts (the upsert path would
    measure the commit stage, not snapshots)."""
    rng = random.Random(seed)
    now = datetime.now(UTC)
    with Catalog(settings.resolved_catalog_url) as catalog:
        catalog.migrate()
        for start in range(0, rows, INSERT_CHUNK):
            batch = [_row(i, 1, rng, now) for i in range(start, min(rows, start + INSERT_CHUNK))]
            _insert(catalog, batch)


def _row(i: int, revision: int, rng: random.Random, now: datetime) -> dict[str, Any]:
    x = 400_000 + rng.random() * 200_000
    y = 5_000_000 + rng.random() * 200_000
    return {
        "sample_id": f"task-{i:08d}",
        "revision": revision,
        "schema_version": 1,
        "image_hash": f"{i * 7 + revision:064x}",
        "mask_hash": f"{i * 11 + revision:064x}",
        "width": 256,
        "height": 256,
        "crs": "EPSG:32633",
        "transform": [0.5, 0, x, 0, -0.5, y + 128],
        "bounds": [x, y, x + 128, y + 128],
        "class_pixels": {n: rng.randrange(0, 20_000) for n in CLASSES},
        "features": [],
        "checks": [
            {"code": c, "passed": True, "value": 0.1, "threshold": 0.5, "message": ""}
            for c in ("sample.nodata_fraction", "sample.blank", "sample.saturated", "mask")
        ],
        "source": "bench",
        "event_id": f"e{i}-{revision}",
        "image_uri": "scene.tif",
        "image_content_hash": "0" * 64,
        "code_version": "bench",
        "config_hash": "bench",
        "kafka_topic": "annotations.valid",
        "kafka_partition": i % 6,
        "kafka_offset": i,
        "created_at": now,
        "committed_at": now,
    }


def _insert(catalog: Catalog, batch: list[dict[str, Any]]) -> None:
    """Versions and current states of a batch; a state already there takes the new revision."""
    current = sqlite_insert(samples).values(
        [
            {
                "sample_id": r["sample_id"],
                "revision": r["revision"],
                "deleted": False,
                "image_hash": r["image_hash"],
                "mask_hash": r["mask_hash"],
                "updated_at": r["committed_at"],
            }
            for r in batch
        ]
    )
    upsert = current.on_conflict_do_update(
        index_elements=[samples.c.sample_id],
        set_={
            c: current.excluded[c] for c in ("revision", "image_hash", "mask_hash", "updated_at")
        },
    )
    with catalog.transaction(write=True) as conn:
        conn.execute(versions.insert(), batch)
        conn.execute(upsert)


def change_catalog(settings: Settings, rows: int, seed: int) -> None:
    """2 % new revisions, 2 % new samples, 1 % deletions."""
    rng = random.Random(seed + 1)
    now = datetime.now(UTC)
    picks = rng.sample(range(rows), rows * 3 // 100)
    bumped, deleted = picks[: rows * 2 // 100], picks[rows * 2 // 100 :]
    fresh = range(rows, rows + rows * 2 // 100)
    with Catalog(settings.resolved_catalog_url) as catalog:
        for chunk in _chunks([_row(i, 2, rng, now) for i in bumped]):
            _insert(catalog, chunk)
        for chunk in _chunks([_row(i, 1, rng, now) for i in fresh]):
            _insert(catalog, chunk)
        catalog.apply([Deletion(sample_id=f"task-{i:08d}", revision=3) for i in deleted])


def _chunks(items: list[Any]) -> list[list[Any]]:
    return [items[i : i + INSERT_CHUNK] for i in range(0, len(items), INSERT_CHUNK)]


def _measured(task: str, data_dir: str, queue: Any) -> None:
    """Run one phase in this (fresh) process; report its seconds and peak RSS."""
    from labelflow.snapshots import diff as diffs
    from labelflow.snapshots.store import SnapshotStore

    settings = _settings(Path(data_dir))
    store = SnapshotStore.from_settings(settings)
    base_rss = _peak_rss_kb()
    started = time.perf_counter()
    if task in ("create-v1", "create-v2"):
        with Catalog(settings.resolved_catalog_url) as catalog:
            snapshot = store.create(task[-2:], catalog, settings, force=True)
        info: dict[str, Any] = {"samples": snapshot.meta.stats.samples, "diff": snapshot.meta.diff}
    else:
        changes = diffs.diff(
            store.open("v1").manifest(diffs.DIFF_INPUT), store.open("v2").manifest(diffs.DIFF_INPUT)
        )
        info = {"diff": diffs.summary(changes)}
    seconds = time.perf_counter() - started
    peak = _peak_rss_kb()
    queue.put(
        {
            "seconds": round(seconds, 2),
            "peak_rss_mb": round(peak / 1024),
            **info,
            "rss_before_mb": round(base_rss / 1024),
        }
    )


def _peak_rss_kb() -> int:
    """This process's peak resident memory (VmHWM): ``ru_maxrss`` would report the parent's
    peak when that was higher at the fork, since exec does not reset it."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def measure(task: str, data_dir: Path) -> dict[str, Any]:
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    process = ctx.Process(target=_measured, args=(task, str(data_dir), queue))
    process.start()
    result = queue.get()
    process.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--chips", type=int, default=300)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--image", type=Path, default=DEFAULT_IMAGE)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--skip-loader", action="store_true")
    parser.add_argument("--skip-scale", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    results: dict[str, Any] = {}
    from labelflow.snapshots.store import SnapshotStore

    if not args.skip_loader:
        with tempfile.TemporaryDirectory(prefix="lf-bench-loader-") as tmp:
            settings = _settings(Path(tmp))
            started = time.perf_counter()
            build_chips(settings, args.image, args.chips, args.size, args.seed)
            with Catalog(settings.resolved_catalog_url) as catalog:
                SnapshotStore.from_settings(settings).create("bench", catalog, settings, force=True)
            print(f"built {args.chips} chips in {time.perf_counter() - started:.1f} s")
            results["loader"] = bench_loader(settings, args.threads, args.repeat)
            print("loader:", json.dumps(results["loader"]))
    if not args.skip_scale:
        with tempfile.TemporaryDirectory(prefix="lf-bench-scale-") as tmp:
            data_dir = Path(tmp)
            settings = _settings(data_dir)
            started = time.perf_counter()
            fill_catalog(settings, args.rows, args.seed)
            fill_s = time.perf_counter() - started
            print(f"catalog of {args.rows} rows filled in {fill_s:.1f} s")
            scale: dict[str, Any] = {"rows": args.rows, "fill_s": round(fill_s, 1)}
            scale["create_v1"] = measure("create-v1", data_dir)
            print("create v1:", json.dumps(scale["create_v1"]))
            change_catalog(settings, args.rows, args.seed)
            scale["create_v2"] = measure("create-v2", data_dir)
            print("create v2 (with diff to v1):", json.dumps(scale["create_v2"]))
            scale["diff"] = measure("diff", data_dir)
            print("diff v1 v2:", json.dumps(scale["diff"]))
            results["scale"] = scale
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
