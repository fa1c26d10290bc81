"""Spatial-block splits: stable as data grows, and no split ever crosses the buffer."""

from __future__ import annotations

import math

import numpy as np
import pytest

from labelflow.snapshots.settings import SplitRules
from labelflow.snapshots.splits import EXCLUDED, assign_splits


def _chips(rng: np.random.Generator, n: int, extent: float, side: float) -> np.ndarray:
    """``n`` square chips of ``side`` at random places in ``[0, extent)²`` (offset origin)."""
    x = rng.uniform(0, extent, n) + 400_000
    y = rng.uniform(0, extent, n) + 5_000_000
    return np.stack([x, y, x + side, y + side], axis=1)


def _box_distances(boxes: np.ndarray) -> np.ndarray:
    """Euclidean distance between every pair of axis-aligned boxes (0 when they touch)."""
    gap_x = np.maximum(
        0, np.maximum(boxes[:, None, 0] - boxes[None, :, 2], boxes[None, :, 0] - boxes[:, None, 2])
    )
    gap_y = np.maximum(
        0, np.maximum(boxes[:, None, 1] - boxes[None, :, 3], boxes[None, :, 1] - boxes[:, None, 3])
    )
    return np.hypot(gap_x, gap_y)


def _leaks(split: np.ndarray, distances: np.ndarray, buffer: float) -> list[tuple[int, int]]:
    """Pairs closer than ``buffer`` that are in two different (non-excluded) splits."""
    kept = split != EXCLUDED
    close = (distances < buffer) & kept[:, None] & kept[None, :]
    different = split[:, None] != split[None, :]
    return [tuple(p) for p in np.argwhere(close & different)]


def test_no_sample_moves_when_twenty_percent_more_are_added() -> None:
    rng = np.random.default_rng(1)
    rules = SplitRules(block_size_m=500, buffer_m=40)
    first = _chips(rng, 2000, 20_000, 120)
    grown = np.concatenate([first, _chips(rng, 400, 25_000, 120)])
    before = assign_splits(first, ["EPSG:32633"] * 2000, ["s"] * 2000, rules)
    after = assign_splits(grown, ["EPSG:32633"] * 2400, ["s"] * 2400, rules)
    assert (after.split[:2000] == before.split).all()
    assert (after.block_x[:2000] == before.block_x).all()
    assert set(after.split) == {"train", "val", "test", EXCLUDED}


@pytest.mark.parametrize("buffer", [0.0, 30.0, 150.0])
def test_no_two_samples_closer_than_the_buffer_are_in_different_splits(buffer: float) -> None:
    rng = np.random.default_rng(2)
    rules = SplitRules(block_size_m=400, buffer_m=buffer)
    boxes = _chips(rng, 1500, 6_000, 90)
    got = assign_splits(boxes, ["EPSG:32633"] * len(boxes), ["s"] * len(boxes), rules)
    distances = _box_distances(boxes)
    assert _leaks(got.split, distances, max(buffer, 1e-9)) == []
    # The test is not vacuous: neighbours in different blocks exist and most samples stay.
    assert (got.split != EXCLUDED).mean() > 0.5
    assert len(set(got.split) - {EXCLUDED}) == 3


def test_touching_chips_share_a_split_even_without_a_buffer() -> None:
    rules = SplitRules(block_size_m=100, buffer_m=0)
    # A row of 50 m chips edge to edge across many block boundaries.
    x = np.arange(0, 5000, 50, dtype=float)
    boxes = np.stack([x, np.zeros_like(x), x + 50, np.full_like(x, 50)], axis=1)
    got = assign_splits(boxes, ["EPSG:3857"] * len(x), ["s"] * len(x), rules)
    for a, b in zip(got.split[:-1], got.split[1:], strict=True):
        assert a == b or EXCLUDED in (a, b)


def test_pixel_grid_per_scene_without_a_crs() -> None:
    rng = np.random.default_rng(3)
    rules = SplitRules(block_size_px=512, buffer_px=32)
    # Chip bounds from an identity transform: y grows downwards ("south" > "north").
    cols = rng.integers(0, 8000, 800).astype(float)
    rows = rng.integers(0, 8000, 800).astype(float)
    boxes = np.stack([cols, rows + 256, cols + 256, rows], axis=1)
    scenes = [f"scene-{i % 2}" for i in range(800)]
    got = assign_splits(boxes, [None] * 800, scenes, rules)
    assert set(got.grid) == {"px:scene-0", "px:scene-1"}
    for scene in ("scene-0", "scene-1"):
        mine = np.array([s == scene for s in scenes])
        normal = np.stack([cols, rows, cols + 256, rows + 256], axis=1)[mine]
        assert _leaks(got.split[mine], _box_distances(normal), 32) == []


def test_geographic_samples_are_split_in_metres() -> None:
    rng = np.random.default_rng(4)
    rules = SplitRules(block_size_m=300, buffer_m=60)
    lon0, lat0 = 13.4, 52.5  # Berlin: UTM zone 33 north
    dlat = 80 / 111_320
    dlon = 80 / (111_320 * math.cos(math.radians(lat0)))
    lon = lon0 + rng.uniform(0, 0.05, 700)
    lat = lat0 + rng.uniform(0, 0.03, 700)
    boxes = np.stack([lon, lat, lon + dlon, lat + dlat], axis=1)
    got = assign_splits(boxes, ["EPSG:4326"] * 700, ["s"] * 700, rules)
    assert set(got.grid) == {"EPSG:32633"}
    # Distances on a local equirectangular plane, independent of the projection used above;
    # a 10 % margin covers the difference between the two approximations of the ground.
    metric = boxes.copy()
    metric[:, [0, 2]] *= 111_320 * math.cos(math.radians(lat0))
    metric[:, [1, 3]] *= 111_320
    assert _leaks(got.split, _box_distances(metric), 60 * 0.9) == []


def test_fractions_and_salt_shape_the_assignment() -> None:
    rng = np.random.default_rng(5)
    boxes = _chips(rng, 4000, 200_000, 10)
    crs, scene = ["EPSG:32633"] * 4000, ["s"] * 4000
    got = assign_splits(boxes, crs, scene, SplitRules(block_size_m=1000, buffer_m=0))
    shares = {s: float((got.split == s).mean()) for s in ("train", "val", "test")}
    assert shares["train"] == pytest.approx(0.8, abs=0.04)
    assert shares["val"] == pytest.approx(0.1, abs=0.03)
    other = assign_splits(boxes, crs, scene, SplitRules(block_size_m=1000, buffer_m=0, salt="x"))
    assert (other.split != got.split).mean() > 0.2


def test_fractions_must_sum_to_one() -> None:
    with pytest.raises(ValueError, match="sum to 1"):
        SplitRules(fractions={"train": 0.5, "test": 0.4})
