"""XYZ ("slippy map") tile servers over HTTP: fetch the tiles covering the bounds, stitch them,
and crop to a chip on the EPSG:3857 pixel grid of the zoom level.

``ImageRef.uri`` is a URL template with ``{z}``, ``{x}`` and ``{y}``; ``bounds`` (in
``bounds_crs``, default EPSG:3857) say what to cover; ``zoom`` picks the level. Without a zoom
— or when the chip at that zoom would exceed ``max_size`` — the deepest level whose chip fits
is used: each level up halves the chip, so a fitting one always exists.

Failures are classified per tile: a timeout is ``imagery.timeout``, a refused or broken
connection ``imagery.unreachable``, a 5xx/429 answer ``imagery.unavailable`` (all transient:
the server may recover), a 404 (or any other 4xx) ``imagery.missing``, bytes no image format
we read (an HTML page) ``imagery.unsupported`` and a broken image ``imagery.corrupt``
(permanent: asking again returns the same answer).
"""

from __future__ import annotations

import math
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Self

import httpx
import numpy as np
from affine import Affine
from rasterio.crs import CRS
from rasterio.errors import CRSError, NotGeoreferencedWarning, RasterioIOError
from rasterio.io import MemoryFile
from rasterio.warp import transform_bounds

from labelflow.imagery.base import (
    DEFAULT_MAX_CHIP_SIZE,
    Chip,
    ImageryCorrupt,
    ImageryCrsInvalid,
    ImageryMissing,
    ImageryOutOfBounds,
    ImageryTimeout,
    ImageryUnavailable,
    ImageryUnreachable,
    ImageryUnsupported,
)
from labelflow.model import ImageRef

MERCATOR_HALF_WORLD = 20_037_508.342789244
"""Half the width of the EPSG:3857 world in metres: the tile grid spans ±this on both axes."""

TILE_SIZE = 256
MAX_ZOOM = 22
FETCH_WORKERS = 8
"""Tiles fetched in parallel: a 1024-pixel chip spans up to 25 tiles, and fetching them one
after another would multiply the server's latency by that much."""

Bounds = tuple[float, float, float, float]


def resolution(zoom: int, tile_size: int = TILE_SIZE) -> float:
    """Metres per pixel at ``zoom``."""
    return 2 * MERCATOR_HALF_WORLD / (tile_size * 2**zoom)


def pixel_window(
    bounds: Bounds, zoom: int, tile_size: int = TILE_SIZE
) -> tuple[int, int, int, int]:
    """``(col0, row0, col1, row1)``: the whole world pixels at ``zoom`` covering EPSG:3857
    ``bounds`` (end exclusive), clipped to the world."""
    res = resolution(zoom, tile_size)
    world = tile_size * 2**zoom
    eps = 1e-6  # bounds on pixel edges must not grow the window by a pixel
    col0 = math.floor((bounds[0] + MERCATOR_HALF_WORLD) / res + eps)
    col1 = math.ceil((bounds[2] + MERCATOR_HALF_WORLD) / res - eps)
    row0 = math.floor((MERCATOR_HALF_WORLD - bounds[3]) / res + eps)
    row1 = math.ceil((MERCATOR_HALF_WORLD - bounds[1]) / res - eps)
    return (
        max(col0, 0),
        max(row0, 0),
        min(max(col1, col0 + 1), world),
        min(max(row1, row0 + 1), world),
    )


def tile_bounds(x: int, y: int, zoom: int) -> Bounds:
    """EPSG:3857 bounds of tile ``(x, y)`` at ``zoom`` (y counted from the north)."""
    size = 2 * MERCATOR_HALF_WORLD / 2**zoom
    west = -MERCATOR_HALF_WORLD + x * size
    north = MERCATOR_HALF_WORLD - y * size
    return (west, north - size, west + size, north)


class XyzProvider:
    """Reads chips from an XYZ tile server. Pass ``client`` to share connections/settings."""

    def __init__(
        self,
        *,
        client: httpx.Client | None = None,
        timeout_s: float = 10.0,
        max_size: int = DEFAULT_MAX_CHIP_SIZE,
        tile_size: int = TILE_SIZE,
    ) -> None:
        self._own_client = client is None
        self.client = client or httpx.Client(timeout=timeout_s, follow_redirects=True)
        self.max_size = max_size
        self.tile_size = tile_size

    def close(self) -> None:
        if self._own_client:
            self.client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def read(self, ref: ImageRef) -> Chip:
        if ref.bounds is None:
            raise ImageryOutOfBounds(f"{ref.uri}: an XYZ source has no extent; bounds required")
        bounds = _to_mercator(ref.bounds, ref.bounds_crs)
        if (
            bounds[2] <= -MERCATOR_HALF_WORLD
            or bounds[0] >= MERCATOR_HALF_WORLD
            or bounds[3] <= -MERCATOR_HALF_WORLD
            or bounds[1] >= MERCATOR_HALF_WORLD
        ):
            raise ImageryOutOfBounds(f"bounds {ref.bounds} are outside the web mercator world")
        zoom = self._zoom(bounds, ref.zoom)
        col0, row0, col1, row1 = pixel_window(bounds, zoom, self.tile_size)
        tiles = [
            (x, y)
            for y in range(row0 // self.tile_size, (row1 - 1) // self.tile_size + 1)
            for x in range(col0 // self.tile_size, (col1 - 1) // self.tile_size + 1)
        ]
        urls = [ref.uri.format(z=zoom, x=x, y=y) for x, y in tiles]
        with ThreadPoolExecutor(max_workers=min(FETCH_WORKERS, len(urls))) as pool:
            payloads = list(pool.map(self._fetch, urls))
        mosaic = self._stitch(tiles, payloads, urls)
        x_origin = tiles[0][0] * self.tile_size
        y_origin = tiles[0][1] * self.tile_size
        pixels = mosaic[:, row0 - y_origin : row1 - y_origin, col0 - x_origin : col1 - x_origin]
        res = resolution(zoom, self.tile_size)
        transform = Affine(
            res, 0.0, -MERCATOR_HALF_WORLD + col0 * res, 0.0, -res, MERCATOR_HALF_WORLD - row0 * res
        )
        return Chip.from_array(
            np.ascontiguousarray(pixels), crs="EPSG:3857", transform=transform, nodata=None
        )

    def _zoom(self, bounds: Bounds, wanted: int | None) -> int:
        zoom = MAX_ZOOM if wanted is None else wanted
        while zoom > 0:
            col0, row0, col1, row1 = pixel_window(bounds, zoom, self.tile_size)
            if max(col1 - col0, row1 - row0) <= self.max_size:
                break
            zoom -= 1
        return zoom

    def _fetch(self, url: str) -> bytes:
        try:
            response = self.client.get(url)
        except httpx.TimeoutException as exc:
            raise ImageryTimeout(f"{url}: {exc!r}") from exc
        except httpx.TransportError as exc:
            raise ImageryUnreachable(f"{url}: {exc!r}") from exc
        status = response.status_code
        if status >= 500 or status == 429:
            raise ImageryUnavailable(f"{url}: HTTP {status}")
        if status >= 400:
            raise ImageryMissing(f"{url}: HTTP {status}")
        return response.content

    def _stitch(
        self, tiles: list[tuple[int, int]], payloads: list[bytes], urls: list[str]
    ) -> np.ndarray:
        """One array of all tiles in their grid positions (tiles are the full rectangle)."""
        x0, y0 = tiles[0]
        cols = tiles[-1][0] - x0 + 1
        rows = tiles[-1][1] - y0 + 1
        mosaic: np.ndarray | None = None
        for (x, y), payload, url in zip(tiles, payloads, urls, strict=True):
            tile = _decode(payload, url, self.tile_size)
            if mosaic is None:
                size = self.tile_size
                mosaic = np.zeros((tile.shape[0], rows * size, cols * size), tile.dtype)
            if tile.shape[0] != mosaic.shape[0] or tile.dtype != mosaic.dtype:
                raise ImageryCorrupt(f"{url}: bands/dtype differ from the other tiles")
            top, left = (y - y0) * self.tile_size, (x - x0) * self.tile_size
            mosaic[:, top : top + self.tile_size, left : left + self.tile_size] = tile
        assert mosaic is not None  # tiles is never empty: pixel_window is at least 1x1
        return mosaic


def _decode(payload: bytes, url: str, tile_size: int) -> np.ndarray:
    """Tile pixels; RGB(A) keeps RGB (alpha is presentation, not data), grey keeps one band."""
    try:
        with warnings.catch_warnings():
            # Tiles carry no georeference by design; their place comes from the URL.
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with MemoryFile(payload) as memfile, memfile.open() as src:
                pixels = src.read(indexes=[1, 2, 3] if src.count >= 3 else [1])
    except RasterioIOError as exc:
        if "not recognized as" in str(exc):
            raise ImageryUnsupported(f"{url}: not an image: {exc}") from exc
        raise ImageryCorrupt(f"{url}: cannot decode tile: {exc}") from exc
    if pixels.shape[1:] != (tile_size, tile_size):
        raise ImageryCorrupt(f"{url}: tile is {pixels.shape[2]}x{pixels.shape[1]}, not {tile_size}")
    return pixels


def _to_mercator(bounds: Bounds, crs: str | None) -> Bounds:
    if crs is None:
        return bounds
    try:
        src = CRS.from_user_input(crs)
        if src.to_epsg() == 3857:
            return bounds
        return tuple(transform_bounds(src, "EPSG:3857", *bounds, densify_pts=21))  # type: ignore[return-value]
    except (CRSError, ValueError) as exc:
        raise ImageryCrsInvalid(f"cannot transform bounds from {crs!r}: {exc}") from exc
