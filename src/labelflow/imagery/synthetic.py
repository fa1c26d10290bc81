"""Synthetic scenes for demos and tests: deterministic imagery that needs no download.

``ImageRef(provider="synthetic", uri="synthetic://<scene id>", width=…, height=…)`` names a
scene. The scene id seeds everything: where on Earth it sits (EPSG:3857, 0.5 m pixels), its
layout (:func:`scene_layout`: water, a road, trees, buildings) and its texture, so every
process renders the same pixels for the same id. The provider writes the scene once as a real
GeoTIFF into a cache directory and then reads it through :class:`GeoTiffProvider`, so demos
exercise the same windowing, bounds and CRS code as real imagery.

The content is meant to pass sample QC: textured (not blank), mid-range values (not
saturated), and each class drawn in its own colour where :func:`scene_layout` puts it, so a
source that labels the scene with that layout produces masks that match the pixels.
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import numpy as np
from affine import Affine

from labelflow.catalog.blobs import atomic_write, encode_geotiff
from labelflow.imagery.base import DEFAULT_MAX_CHIP_SIZE, Chip, ImageryMissing
from labelflow.imagery.geotiff import GeoTiffProvider
from labelflow.masks import rasterize_features
from labelflow.model import CoordSpace, Feature, ImageRef, Taxonomy

SCHEME = "synthetic://"
SCENE_CRS = "EPSG:3857"
PIXEL_SIZE_M = 0.5
DEFAULT_SIZE = 512
MAX_SIZE = 8192
"""Largest scene side rendered; a typo'd size must not render gigabytes into the cache."""

_PALETTE = {
    0: (96, 112, 72),  # background: fields
    1: (176, 164, 150),  # building
    2: (118, 118, 124),  # road
    3: (46, 86, 48),  # tree
    4: (44, 74, 112),  # water
}
"""Colour per class index of the default :class:`Taxonomy`."""


def scene_id(ref: ImageRef) -> str:
    return ref.uri.removeprefix(SCHEME)


def _rng(scene: str, purpose: str) -> np.random.Generator:
    digest = hashlib.sha256(f"{purpose}\x1f{scene}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "big"))


def scene_transform(scene: str) -> Affine:
    """Top-left corner somewhere in ±60° longitude, ±50° latitude, snapped to the grid."""
    x, y = _rng(scene, "origin").uniform((-6.6e6, -6.4e6), (6.6e6, 6.4e6))
    x, y = round(x / PIXEL_SIZE_M) * PIXEL_SIZE_M, round(y / PIXEL_SIZE_M) * PIXEL_SIZE_M
    return Affine(PIXEL_SIZE_M, 0.0, x, 0.0, -PIXEL_SIZE_M, y)


def _rect(x0: float, y0: float, x1: float, y1: float) -> dict:
    ring = [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]
    return {"type": "Polygon", "coordinates": [ring]}


def scene_layout(scene: str, width: int, height: int) -> list[Feature]:
    """What is where in the scene, in pixel coordinates, in drawing order (later on top)."""
    rng = _rng(scene, "layout")
    features: list[Feature] = []

    def add(label: str, x0: float, y0: float, x1: float, y1: float) -> None:
        x0, x1 = sorted((int(np.clip(x0, 0, width)), int(np.clip(x1, 0, width))))
        y0, y1 = sorted((int(np.clip(y0, 0, height)), int(np.clip(y1, 0, height))))
        if x1 - x0 >= 2 and y1 - y0 >= 2:
            fid = f"{label}-{len(features)}"
            features.append(Feature(label=label, geometry=_rect(x0, y0, x1, y1), feature_id=fid))

    add("water", 0, height * rng.uniform(0.75, 0.9), width * rng.uniform(0.2, 0.4), height)
    road_y = height * rng.uniform(0.35, 0.6)
    add("road", 0, road_y, width, road_y + max(3, height / 24))
    for _ in range(rng.integers(3, 7)):
        cx, cy, r = rng.uniform(0, width), rng.uniform(0, height), rng.uniform(3, width / 24 + 4)
        add("tree", cx - r, cy - r, cx + r, cy + r)
    for _ in range(rng.integers(3, 9)):
        x, y = rng.uniform(0, width * 0.9), rng.uniform(0, height * 0.7)
        w, h = rng.uniform(width / 20, width / 7), rng.uniform(height / 20, height / 7)
        add("building", x, y, x + w, y + h)
    return features


def render_scene(scene: str, width: int, height: int) -> np.ndarray:
    """The scene's pixels ``(3, height, width)`` as uint8, values kept within 16..239."""
    transform = scene_transform(scene)
    blank = Chip.from_array(
        np.zeros((1, height, width), np.uint8), crs=SCENE_CRS, transform=transform, nodata=None
    )
    classes = rasterize_features(
        scene_layout(scene, width, height), Taxonomy(), chip=blank, space=CoordSpace.PIXEL
    )
    palette = np.zeros((256, 3), np.float32)
    for index, colour in _PALETTE.items():
        palette[index] = colour
    base = palette[classes].transpose(2, 0, 1)
    rng = _rng(scene, "texture")
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    fx, fy, phase = rng.uniform(0.01, 0.05, 3)
    shading = 14 * np.sin(xx * fx + phase) * np.cos(yy * fy)
    noise = rng.normal(0, 9, size=(3, height, width)).astype(np.float32)
    return np.clip(base + shading + noise, 16, 239).astype(np.uint8)


class SyntheticProvider:
    """Renders scenes into ``cache_dir`` (once per id and size) and reads them as GeoTIFFs.
    Safe to share between threads."""

    def __init__(self, cache_dir: Path, *, max_size: int = DEFAULT_MAX_CHIP_SIZE) -> None:
        self.cache_dir = cache_dir
        self.geotiff = GeoTiffProvider(max_size=max_size)
        self._rendering: dict[Path, threading.Lock] = {}
        self._rendering_lock = threading.Lock()

    def scene_path(self, ref: ImageRef) -> Path:
        """The cached GeoTIFF of ``ref``'s scene, rendered first if absent."""
        scene = scene_id(ref)
        width, height = ref.width or DEFAULT_SIZE, ref.height or DEFAULT_SIZE
        if not scene or max(width, height) > MAX_SIZE:
            raise ImageryMissing(f"no synthetic scene {ref.uri!r} of {width}x{height}")
        name = hashlib.sha256(scene.encode()).hexdigest()[:24]
        path = self.cache_dir / f"{name}-{width}x{height}.tif"
        if path.exists():
            return path
        # Threads of one worker render a scene once; processes may each render it, and the
        # atomic rename makes their identical files replace one another harmlessly.
        with self._rendering_lock:
            rendering = self._rendering.setdefault(path, threading.Lock())
        with rendering:
            if not path.exists():
                pixels = render_scene(scene, width, height)
                transform = scene_transform(scene)
                atomic_write(path, encode_geotiff(pixels, crs=SCENE_CRS, transform=transform))
        return path

    def read(self, ref: ImageRef) -> Chip:
        path = self.scene_path(ref)
        return self.geotiff.read_path(str(path), bounds=ref.bounds, bounds_crs=ref.bounds_crs)

    def close(self) -> None:
        """Close the scenes kept open for reading."""
        self.geotiff.close()
