"""Synthetic scenes: deterministic, georeferenced, plausible, and labelled where drawn."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import rasterio

from labelflow.imagery import synthetic
from labelflow.imagery.base import ImageryError
from labelflow.imagery.synthetic import SyntheticProvider, scene_layout
from labelflow.masks import rasterize_features
from labelflow.model import CoordSpace, ImageRef, Taxonomy
from labelflow.quality.samples import SampleRules, all_passed, check_sample

REF = ImageRef(provider="synthetic", uri="synthetic://demo-1", width=320, height=256)


def test_same_scene_renders_the_same_chip_anywhere(tmp_path: Path) -> None:
    first = SyntheticProvider(tmp_path / "a").read(REF)
    second = SyntheticProvider(tmp_path / "b").read(REF)
    assert first.content_hash == second.content_hash
    np.testing.assert_array_equal(first.pixels, second.pixels)
    other = SyntheticProvider(tmp_path / "a").read(REF.model_copy(update={"uri": "synthetic://x"}))
    assert other.content_hash != first.content_hash
    assert other.transform != first.transform, "each scene sits somewhere else"


def test_scene_is_a_real_geotiff_and_bounds_select_a_window(tmp_path: Path) -> None:
    provider = SyntheticProvider(tmp_path)
    path = provider.scene_path(REF)
    with rasterio.open(path) as src:
        assert (src.width, src.height, src.count) == (320, 256, 3)
        assert src.crs.to_epsg() == 3857
        window_bounds = rasterio.windows.bounds(
            rasterio.windows.Window(32, 64, 100, 50), src.transform
        )
        expected = src.read(window=rasterio.windows.Window(32, 64, 100, 50))
    chip = provider.read(REF.model_copy(update={"bounds": window_bounds}))
    np.testing.assert_array_equal(chip.pixels, expected)


def test_scene_passes_sample_qc_and_its_layout_matches_its_pixels(tmp_path: Path) -> None:
    chip = SyntheticProvider(tmp_path).read(REF)
    taxonomy = Taxonomy()
    layout = scene_layout("demo-1", 320, 256)
    assert {f.label for f in layout} >= {"building", "road", "water"}
    mask = rasterize_features(layout, taxonomy, chip=chip, space=CoordSpace.PIXEL)
    checks = check_sample(chip, mask, SampleRules())
    assert all_passed(checks), checks
    building = chip.pixels[:, mask == taxonomy.classes["building"]].mean(axis=1)
    water = chip.pixels[:, mask == taxonomy.classes["water"]].mean(axis=1)
    assert building.mean() > 140 and water[2] > water[0] + 40, (building, water)


def test_absurd_scene_size_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ImageryError) as info:
        SyntheticProvider(tmp_path).read(REF.model_copy(update={"width": 100_000}))
    assert info.value.code == "imagery.missing"


def test_threads_reading_a_new_scene_render_it_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    renders: list[str] = []
    real_render = synthetic.render_scene

    def counting_render(scene: str, width: int, height: int) -> np.ndarray:
        renders.append(scene)
        return real_render(scene, width, height)

    monkeypatch.setattr(synthetic, "render_scene", counting_render)
    provider = SyntheticProvider(tmp_path)
    with ThreadPoolExecutor(max_workers=8) as pool:
        hashes = set(pool.map(lambda _: provider.read(REF).content_hash, range(16)))
    provider.close()
    assert renders == ["demo-1"] and len(hashes) == 1
    assert [p.name for p in tmp_path.iterdir()] == [provider.scene_path(REF).name]


def test_scenes_written_by_two_processes_at_once_stay_whole(tmp_path: Path) -> None:
    """Two providers (as two workers would) racing on one cache: each renames a whole file."""
    first, second = SyntheticProvider(tmp_path), SyntheticProvider(tmp_path)
    with ThreadPoolExecutor(max_workers=2) as pool:
        paths = list(pool.map(lambda p: p.scene_path(REF), [first, second]))
    assert paths[0] == paths[1]
    assert first.read(REF).content_hash == second.read(REF).content_hash
    assert not list(tmp_path.glob(".*.tmp"))
