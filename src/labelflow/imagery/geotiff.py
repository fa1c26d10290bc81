"""GeoTIFF and Cloud-Optimized GeoTIFF through rasterio: local paths or URLs GDAL can open.

A chip is the window covering ``ImageRef.bounds`` (transformed into the image's CRS when
``bounds_crs`` differs), or the whole image. Only that window is read — for a COG over HTTP
that means a few range requests, not the whole file — and a window larger than ``max_size``
is read decimated, which GDAL serves from the overviews when the file has them.

Bounds that reach past the image's edge still give a chip of exactly those bounds, the part
outside filled with nodata: pixel-space labels are drawn on the chip the labelling tool
showed, so its origin must not move. Bounds entirely outside are ``imagery.out_of_bounds``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.errors import CRSError, RasterioIOError
from rasterio.io import DatasetReader
from rasterio.warp import transform_bounds
from rasterio.windows import Window, from_bounds

from labelflow.imagery.base import (
    DEFAULT_MAX_CHIP_SIZE,
    Chip,
    ImageryCorrupt,
    ImageryCrsInvalid,
    ImageryError,
    ImageryMissing,
    ImageryOutOfBounds,
    ImageryTimeout,
    ImageryUnavailable,
    crs_string,
)
from labelflow.model import ImageRef

_EDGE_EPS = 1e-6
"""Bounds that sit on pixel edges come back from from_bounds as 9.9999999 or 10.0000001;
without a tolerance the window would grow by a pixel on a rounding error."""

PADDING_NODATA = 0
"""Fill value for bounds past the edge of an image that declares no nodata value."""


@dataclass(frozen=True)
class SceneInfo:
    """What a GeoTIFF says about itself without reading pixels."""

    crs: str | None
    transform: Affine
    width: int
    height: int


class GeoTiffProvider:
    """Reads chips from GeoTIFFs. ``http_timeout_s`` bounds each HTTP request GDAL makes."""

    def __init__(
        self,
        *,
        max_size: int = DEFAULT_MAX_CHIP_SIZE,
        http_timeout_s: float = 30.0,
        resampling: Resampling = Resampling.bilinear,
    ) -> None:
        self.max_size = max_size
        self.http_timeout_s = http_timeout_s
        self.resampling = resampling

    def read(self, ref: ImageRef) -> Chip:
        return self.read_path(ref.uri, bounds=ref.bounds, bounds_crs=ref.bounds_crs)

    def read_path(
        self,
        uri: str,
        *,
        bounds: tuple[float, float, float, float] | None = None,
        bounds_crs: str | None = None,
        window: Window | None = None,
    ) -> Chip:
        """The chip of ``uri`` covering ``bounds`` (in ``bounds_crs``; default the image's),
        or the pixel ``window``, or the whole image."""
        try:
            with self._env(), rasterio.open(uri) as src:
                if window is None and bounds is not None:
                    window = _window_for(src, bounds, bounds_crs)
                return self._read_window(src, window or Window(0, 0, src.width, src.height))
        except RasterioIOError as exc:
            raise _classify(uri, exc) from exc

    def metadata(self, uri: str) -> SceneInfo:
        """CRS, transform and size of ``uri``, reading no pixels."""
        try:
            with self._env(), rasterio.open(uri) as src:
                return SceneInfo(crs_string(src.crs), src.transform, src.width, src.height)
        except RasterioIOError as exc:
            raise _classify(uri, exc) from exc

    def _env(self) -> rasterio.Env:
        return rasterio.Env(
            GDAL_HTTP_TIMEOUT=max(1, math.ceil(self.http_timeout_s)),
            # Retries belong to the stage runner (retry topics), not inside one read.
            GDAL_HTTP_MAX_RETRY=0,
            # Listing a remote directory to look for sidecar files costs a request per read.
            GDAL_DISABLE_READDIR_ON_OPEN="EMPTY_DIR",
        )

    def _read_window(self, src: DatasetReader, window: Window) -> Chip:
        if (
            window.width <= 0
            or window.height <= 0
            or window.col_off >= src.width
            or window.row_off >= src.height
            or window.col_off + window.width <= 0
            or window.row_off + window.height <= 0
        ):
            raise ImageryOutOfBounds(f"window {window} does not intersect {src.name}")
        width, height = int(window.width), int(window.height)
        scale = max(width, height) / self.max_size
        out_w, out_h = width, height
        if scale > 1:
            out_w, out_h = max(1, round(width / scale)), max(1, round(height / scale))
        inside = (
            window.col_off >= 0
            and window.row_off >= 0
            and window.col_off + width <= src.width
            and window.row_off + height <= src.height
        )
        nodata = src.nodata if src.nodata is not None or inside else PADDING_NODATA
        pixels = src.read(
            window=window,
            out_shape=(src.count, out_h, out_w),
            resampling=self.resampling,
            boundless=not inside,
            fill_value=nodata,
        )
        transform = src.window_transform(window) @ Affine.scale(width / out_w, height / out_h)
        return Chip.from_array(pixels, crs=crs_string(src.crs), transform=transform, nodata=nodata)


def _window_for(
    src: DatasetReader, bounds: tuple[float, float, float, float], bounds_crs: str | None
) -> Window:
    """The whole-pixel window covering ``bounds``; raises if it misses the image entirely."""
    if bounds_crs is not None:
        try:
            wanted = CRS.from_user_input(bounds_crs)
        except CRSError as exc:
            raise ImageryCrsInvalid(f"unknown bounds CRS {bounds_crs!r}: {exc}") from exc
        if src.crs is None:
            raise ImageryCrsInvalid(f"{src.name} has no CRS; cannot place bounds in {bounds_crs}")
        if wanted != src.crs:
            try:
                bounds = transform_bounds(wanted, src.crs, *bounds, densify_pts=21)
            except (CRSError, ValueError) as exc:
                raise ImageryCrsInvalid(f"cannot transform bounds to the image CRS: {exc}") from exc
    if (
        not all(math.isfinite(b) for b in bounds)
        or bounds[0] >= bounds[2]
        or bounds[1] >= bounds[3]
    ):
        raise ImageryOutOfBounds(f"empty or invalid bounds {bounds}")
    raw = from_bounds(*bounds, transform=src.transform)
    col0 = math.floor(raw.col_off + _EDGE_EPS)
    row0 = math.floor(raw.row_off + _EDGE_EPS)
    col1 = math.ceil(raw.col_off + raw.width - _EDGE_EPS)
    row1 = math.ceil(raw.row_off + raw.height - _EDGE_EPS)
    if col1 <= 0 or row1 <= 0 or col0 >= src.width or row0 >= src.height:
        raise ImageryOutOfBounds(f"bounds {bounds} do not intersect {src.name} ({src.bounds})")
    return Window(col0, row0, max(1, col1 - col0), max(1, row1 - row0))


def _classify(uri: str, exc: RasterioIOError) -> ImageryError:
    """Map GDAL's failure text onto our codes (GDAL reports HTTP status only in the text)."""
    text = str(exc)
    lowered = text.lower()
    is_remote = "://" in uri
    if "timed out" in lowered or "timeout" in lowered:
        return ImageryTimeout(f"{uri}: {text}")
    if "response code: 5" in lowered or (is_remote and "curl error" in lowered):
        # CURL errors are network failures: refused, reset, DNS, TLS handshake.
        return ImageryUnavailable(f"{uri}: {text}")
    if "response code: 404" in lowered or "response code: 410" in lowered:
        return ImageryMissing(f"{uri}: {text}")
    if not is_remote and not Path(uri).exists():
        return ImageryMissing(f"no such file: {uri}")
    return ImageryCorrupt(f"{uri}: {text}")
