"""The imagery entry point dispatches on ``ImageRef.provider``."""

from __future__ import annotations

from pathlib import Path

from labelflow.config import Settings
from labelflow.imagery.providers import Imagery
from labelflow.model import ImageRef


def test_dispatches_by_provider_and_caches_synthetic_scenes_in_the_data_dir(
    tmp_path: Path, imagery_dir: Path
) -> None:
    with Imagery(Settings(data_dir=tmp_path, max_chip_size=128)) as imagery:
        scene = imagery.read(
            ImageRef(provider="synthetic", uri="synthetic://s", width=64, height=48)
        )
        real = imagery.read(ImageRef(provider="geotiff", uri=str(imagery_dir / "cogeo.tif")))
    assert scene.pixels.shape == (3, 48, 64)
    assert list((tmp_path / "imagery" / "synthetic").glob("*-64x48.tif"))
    assert real.pixels.shape == (3, 128, 128) and real.crs == "EPSG:3857"
