"""Train / val / test by spatial block, with a buffer no split crosses.

Random hold-outs of neighbouring chips leak: a chip and its overlapping neighbour are nearly
the same example, and a model tested on one after training on the other looks better than it
is. So splits are drawn per *block* of a grid laid over the ground, not per sample:

1. Each sample's footprint (its bounds) is put on a grid. Georeferenced samples use a metric
   CRS: ``grid_crs`` when set, else the sample's own CRS when it is projected in metres, else
   the UTM zone of the sample's centre. Samples without a CRS use the pixel grid of their
   scene (the image they were cut from), one grid per scene. Blocks are ``block_size_m`` (or
   ``block_size_px``) squares aligned on the grid's origin.
2. A block's split is a hash of (salt, grid, block column, block row) mapped onto the
   cumulative split fractions. It depends on nothing else, so adding samples never moves an
   existing one: the assignment of a sample is a pure function of its footprint and the rules.
3. The buffer rule: a sample's *reach* is its footprint grown by ``buffer / 2`` on every side.
   If every block the reach touches has the same split, the sample takes it; otherwise it is
   ``excluded`` (kept in the manifest under that name, never trained or tested on).

Why that guarantees "no two samples closer than the buffer are in different splits": two
footprints at distance ``d < buffer`` are closer than ``buffer`` along each axis, so their
reaches (each grown by ``buffer / 2``) share a point, and that point lies in one block that
both reaches touch. A sample that is not excluded has the split of every block it touches —
hence of that shared block — so the two have the same split or one of them is excluded.
Touching or overlapping chips are distance 0 apart and share a block even with no buffer
(block membership of a boundary point is decided by ``floor``, the same for both).

Across grids there is no guarantee: samples in two UTM zones (or two CRSs with different
``grid_crs`` choices) are on different grids; set ``grid_crs`` for an area that spans zones.
Each excluded sample costs training data: with 1 km blocks, 100 m chips and a 50 m buffer
about one sample in ten is excluded under the default 80/10/10 fractions.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from rasterio.crs import CRS
from rasterio.errors import CRSError
from rasterio.warp import transform as warp_transform

from labelflow.snapshots.settings import SplitRules

EXCLUDED = "excluded"
"""The split name of samples in the buffer between blocks of different splits."""

PIXEL_GRID_PREFIX = "px:"

_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


@dataclass(frozen=True)
class Assignment:
    """Per sample, in input order: its split, and the grid and block of its centre."""

    split: np.ndarray  # object (str)
    grid: np.ndarray  # object (str)
    block_x: np.ndarray  # int64
    block_y: np.ndarray  # int64


def assign_splits(
    bounds: np.ndarray,
    crs: Sequence[str | None],
    scene: Sequence[str],
    rules: SplitRules,
) -> Assignment:
    """The split of every sample: ``bounds`` is ``(n, 4)`` ``(minx, miny, maxx, maxy)`` in
    each sample's ``crs`` (pixels of ``scene`` where the crs is None; rows of NaN for samples
    with no bounds at all, which are then placed at the scene's origin)."""
    n = len(bounds)
    raw = np.asarray(bounds, dtype=np.float64).reshape(n, 4)
    # A pixel grid's y grows downwards, so a chip's "south" can be the larger number.
    bounds = np.stack(
        [
            np.minimum(raw[:, 0], raw[:, 2]),
            np.minimum(raw[:, 1], raw[:, 3]),
            np.maximum(raw[:, 0], raw[:, 2]),
            np.maximum(raw[:, 1], raw[:, 3]),
        ],
        axis=1,
    )
    split = np.empty(n, dtype=object)
    grid = np.empty(n, dtype=object)
    block_x = np.zeros(n, dtype=np.int64)
    block_y = np.zeros(n, dtype=np.int64)
    grids = _grid_of_each(bounds, crs, scene, rules)
    names = list(rules.fractions)
    cumulative = np.cumsum([rules.fractions[s] for s in names])
    cumulative[-1] = 1.0  # a float sum of 0.8 + 0.1 + 0.1 may stop short of 1
    for key, (rows, boxes) in grids.items():
        pixel = key.startswith(PIXEL_GRID_PREFIX)
        size = rules.block_size_px if pixel else rules.block_size_m
        half = (rules.buffer_px if pixel else rules.buffer_m) / 2
        key_hash = _key_hash(rules.salt, key)
        x0 = np.floor((boxes[:, 0] - half) / size).astype(np.int64)
        y0 = np.floor((boxes[:, 1] - half) / size).astype(np.int64)
        x1 = np.floor((boxes[:, 2] + half) / size).astype(np.int64)
        y1 = np.floor((boxes[:, 3] + half) / size).astype(np.int64)
        first = _split_index(key_hash, x0, y0, cumulative)
        mixed = np.zeros(len(rows), dtype=bool)
        # Every block of every reach: a few offsets each, since chips are smaller than blocks.
        for dx in range(int((x1 - x0).max(initial=0)) + 1):
            for dy in range(int((y1 - y0).max(initial=0)) + 1):
                inside = (x0 + dx <= x1) & (y0 + dy <= y1)
                if not inside.any():
                    continue
                other = _split_index(key_hash, x0 + dx, y0 + dy, cumulative)
                mixed |= inside & (other != first)
        labels = np.array(names, dtype=object)[first]
        labels[mixed] = EXCLUDED
        split[rows] = labels
        grid[rows] = key
        cx = np.floor((boxes[:, 0] + boxes[:, 2]) / 2 / size).astype(np.int64)
        cy = np.floor((boxes[:, 1] + boxes[:, 3]) / 2 / size).astype(np.int64)
        block_x[rows], block_y[rows] = cx, cy
    return Assignment(split, grid, block_x, block_y)


def _split_index(
    key_hash: np.uint64, bx: np.ndarray, by: np.ndarray, cumulative: np.ndarray
) -> np.ndarray:
    """Index of the split of blocks ``(bx, by)``: a 64-bit mix of the block, as a uniform
    number in [0, 1), against the cumulative fractions."""
    h = _mix(np.full(bx.shape, key_hash, dtype=np.uint64) ^ bx.astype(np.uint64))
    h = _mix(h ^ by.astype(np.uint64))
    uniform = (h >> np.uint64(11)).astype(np.float64) * 2.0**-53
    return np.searchsorted(cumulative, uniform, side="right")


def _mix(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser: every input bit flips about half the output bits. Unsigned
    arithmetic wraps modulo 2**64 the same on every machine, so assignments are portable."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return (x ^ (x >> np.uint64(31))) & _MASK64


def _key_hash(salt: str, key: str) -> np.uint64:
    digest = hashlib.blake2b(f"{salt}\x1f{key}".encode(), digest_size=8).digest()
    return np.uint64(int.from_bytes(digest, "little"))


def _grid_of_each(
    bounds: np.ndarray, crs: Sequence[str | None], scene: Sequence[str], rules: SplitRules
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Grid key → (row indices, their footprints on that grid)."""
    by_crs: dict[str | None, list[int]] = {}
    for i, c in enumerate(crs):
        by_crs.setdefault(c or None, []).append(i)
    out: dict[str, tuple[list[np.ndarray], list[np.ndarray]]] = {}

    def add(key: str, rows: np.ndarray, boxes: np.ndarray) -> None:
        entry = out.setdefault(key, ([], []))
        entry[0].append(rows)
        entry[1].append(boxes)

    for crs_text, indices in by_crs.items():
        rows = np.asarray(indices, dtype=np.int64)
        boxes = bounds[rows]
        missing = np.isnan(boxes).any(axis=1)
        if crs_text is None or missing.any():
            # No CRS (or no bounds): the scene's pixel grid, one grid per scene.
            px_rows = rows if crs_text is None else rows[missing]
            by_scene: dict[str, list[int]] = {}
            for i in px_rows.tolist():
                by_scene.setdefault(scene[i], []).append(i)
            for name, members in by_scene.items():
                sub = np.asarray(members, dtype=np.int64)
                add(PIXEL_GRID_PREFIX + name, sub, np.nan_to_num(bounds[sub]))
            if crs_text is None:
                continue
            rows, boxes = rows[~missing], boxes[~missing]
        for key, sub, projected in _to_metric(crs_text, boxes, rules.grid_crs):
            add(key, rows[sub], projected)
    return {k: (np.concatenate(r), np.concatenate(b)) for k, (r, b) in out.items()}


def _to_metric(
    crs_text: str, boxes: np.ndarray, grid_crs: str | None
) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """``boxes`` in ``crs_text`` as footprints on metric grids: (grid key, rows, boxes)."""
    everything = np.arange(len(boxes))
    try:
        source = CRS.from_user_input(crs_text)
    except CRSError:
        # A CRS GDAL cannot read: one grid of its own, in its units, rather than failing.
        return [(f"crs:{crs_text}", everything, boxes)]
    if grid_crs is not None:
        return [(grid_crs, everything, _project(source, grid_crs, boxes))]
    if not source.is_geographic and source.linear_units_factor[1] == 1.0:
        return [(crs_text, everything, boxes)]
    lonlat = _project(source, "EPSG:4326", boxes)
    lon = (lonlat[:, 0] + lonlat[:, 2]) / 2
    lat = (lonlat[:, 1] + lonlat[:, 3]) / 2
    zone = np.clip(np.floor((lon + 180) / 6).astype(np.int64) + 1, 1, 60)
    epsg = np.where(lat >= 0, 32600, 32700) + zone
    return [
        (f"EPSG:{code}", rows, _project(source, f"EPSG:{code}", boxes[rows]))
        for code in np.unique(epsg)
        for rows in [np.flatnonzero(epsg == code)]
    ]


def _project(source: CRS, target: str, boxes: np.ndarray) -> np.ndarray:
    """Bounding boxes of ``boxes`` in ``target``: corners and edge midpoints transformed
    (a box's edges curve under reprojection; the midpoints keep the bulge inside)."""
    fx = np.array([0, 0.5, 1, 1, 1, 0.5, 0, 0])
    fy = np.array([0, 0, 0, 0.5, 1, 1, 1, 0.5])
    xs = boxes[:, [0]] + (boxes[:, [2]] - boxes[:, [0]]) * fx
    ys = boxes[:, [1]] + (boxes[:, [3]] - boxes[:, [1]]) * fy
    tx, ty = warp_transform(source, CRS.from_user_input(target), xs.ravel(), ys.ravel())
    tx = np.asarray(tx).reshape(xs.shape)
    ty = np.asarray(ty).reshape(ys.shape)
    return np.stack([tx.min(1), ty.min(1), tx.max(1), ty.max(1)], axis=1)
