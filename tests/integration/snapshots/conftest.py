"""Snapshot fixtures: a migrated catalog (real SQLite and real PostgreSQL, from the
``catalog_url`` fixture) with samples whose chips and masks are real GeoTIFF blobs."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from affine import Affine

from labelflow.catalog.blobs import BlobStore
from labelflow.catalog.store import Catalog
from labelflow.config import Settings
from labelflow.model import CheckResult, SampleVersion
from support import make_version

CHIP = 32
"""Chip side in pixels: small, so hundreds of real blobs are written in a second."""

PIXEL_M = 2.0
CLASSES = {"building": 1, "road": 2, "tree": 3}


@dataclass
class World:
    """A catalog, its blob store and settings pointing at both, in one data directory."""

    settings: Settings
    catalog: Catalog
    blobs: BlobStore

    def add(
        self,
        ids: range | list[int],
        *,
        revision: int = 1,
        classes: tuple[str, ...] = ("building", "road", "tree"),
        failed_check: bool = False,
    ) -> list[SampleVersion]:
        """Write sample ``s{i:05d}`` at ``revision`` for each i: a random chip, a mask with
        ``classes`` painted in bands, placed on a 100 m grid in UTM zone 33N."""
        written = []
        for i in ids:
            rng = np.random.default_rng(i * 1000 + revision)
            image = rng.integers(0, 255, (3, CHIP, CHIP), dtype=np.uint8)
            mask = np.zeros((CHIP, CHIP), dtype=np.uint8)
            for k, name in enumerate(classes):
                mask[k * 8 : k * 8 + 4 + revision % 3, :] = CLASSES[name]
            x0, y0 = 400_000 + (i % 60) * 100.0, 5_000_000 + (i // 60) * 100.0
            transform = Affine(PIXEL_M, 0, x0, 0, -PIXEL_M, y0 + CHIP * PIXEL_M)
            image_hash = self.blobs.put_raster(image, crs="EPSG:32633", transform=transform)
            mask_hash = self.blobs.put_raster(mask, crs="EPSG:32633", transform=transform)
            base = make_version(f"s{i:05d}", revision)
            version = base.model_copy(
                update={
                    "image_hash": image_hash,
                    "mask_hash": mask_hash,
                    "width": CHIP,
                    "height": CHIP,
                    "crs": "EPSG:32633",
                    "transform": tuple(transform)[:6],
                    "bounds": (x0, y0, x0 + CHIP * PIXEL_M, y0 + CHIP * PIXEL_M),
                    "class_pixels": {n: int((mask == k).sum()) for n, k in CLASSES.items()},
                    "checks": [CheckResult(code="sample.blank", passed=not failed_check)],
                    "lineage": base.lineage.model_copy(
                        update={
                            "image_uri": "scene.tif",
                            "kafka_partition": i % 3,
                            "kafka_offset": i * 10 + revision,
                        }
                    ),
                }
            )
            written.append(version)
        self.catalog.apply(written)
        return written


@pytest.fixture
def world(catalog_url: str, tmp_path: Path) -> Iterator[World]:
    settings = Settings(
        data_dir=tmp_path / "data",
        catalog_url=catalog_url,
        blob_url=str(tmp_path / "data" / "blobs"),
        taxonomy={"classes": CLASSES},
    )
    with Catalog(catalog_url) as catalog:
        catalog.migrate()
        yield World(settings, catalog, BlobStore.from_settings(settings))
