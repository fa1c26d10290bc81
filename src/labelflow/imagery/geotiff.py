"""GeoTIFF and Cloud-Optimized GeoTIFF through rasterio: local paths or URLs GDAL can open.

A chip is the window covering ``ImageRef.bounds`` (transformed into the image's CRS when
``bounds_crs`` differs), or the whole image. Only that window is read — for a COG over HTTP
that means a few range requests, not the whole file — and a window larger than ``max_size``
is read decimated, which GDAL serves from the overviews when the file has them.

Bounds that reach past the image's edge still give a chip of exactly those bounds, the part
outside filled with nodata: pixel-space labels are drawn on the chip the labelling tool
showed, so its origin must not move. Bounds entirely outside are ``imagery.out_of_bounds``.

An alpha band or a GDAL mask (a COG's internal mask, a ``.msk`` sidecar) says which pixels
have data; it is not data. The alpha band is left out of the chip's pixels, and pixels the
mask marks invalid are set to the chip's nodata value (the image's, else the padding fill),
so sample QC counts them as nodata. A real pixel whose every band equals that fill reads as
nodata too, as it already does for padding.

A provider is safe to share between threads. Each thread keeps its own few datasets open
(rasterio datasets are not thread-safe), so a worker cutting many chips from one COG opens
it once and GDAL's block cache serves tiles that neighbouring chips share; :meth:`close`
closes them all.
"""

from __future__ import annotations

import math
import os
import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import ColorInterp, MaskFlags, Resampling
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
    ImageryRefused,
    ImageryTimeout,
    ImageryUnauthorized,
    ImageryUnavailable,
    ImageryUnreachable,
    ImageryUnsupported,
    crs_string,
)
from labelflow.model import ImageRef

_EDGE_EPS = 1e-6
"""Bounds that sit on pixel edges come back from from_bounds as 9.9999999 or 10.0000001;
without a tolerance the window would grow by a pixel on a rounding error."""

PADDING_NODATA = 0
"""Fill value for bounds past the edge of an image, or for pixels its mask marks invalid,
when it declares no nodata value."""

REMOTE_FILE_SYSTEMS = "/vsicurl/:/vsis3/:/vsigs/:/vsiaz/:/vsiadls/:/vsioss/:/vsiswift/"
"""GDAL's network file systems, as its CPL_VSIL_CURL_NON_CACHED option lists prefixes."""

MAX_OPEN_PER_THREAD = 16
"""Datasets each thread keeps open. Unbounded, a worker that sees thousands of scenes would
run out of file descriptors (and hold each one's header and cached tiles)."""


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
        self._local = threading.local()
        self._caches: list[tuple[threading.Thread, _OpenDatasets]] = []
        self._caches_lock = threading.Lock()
        self._failed_remote: set[str] = set()

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
        with self._env(uri), self._dataset(uri) as src:
            if window is None and bounds is not None:
                window = _window_for(src, bounds, bounds_crs)
            return self._read_window(src, window or Window(0, 0, src.width, src.height))

    def metadata(self, uri: str) -> SceneInfo:
        """CRS, transform and size of ``uri``, reading no pixels."""
        with self._env(uri), self._dataset(uri) as src:
            return SceneInfo(crs_string(src.crs), src.transform, src.width, src.height)

    def close(self) -> None:
        """Close every thread's open datasets; call it once no read is in flight."""
        with self._caches_lock:
            caches, self._caches = self._caches, []
        for _, cache in caches:
            cache.close()
        self._local = threading.local()

    @contextmanager
    def _dataset(self, uri: str) -> Iterator[DatasetReader]:
        """This thread's open dataset of ``uri``, classifying GDAL's failures; a dataset that
        failed is closed, so the next read starts from a fresh open."""
        cache = self._thread_cache()
        try:
            yield cache.get(uri)
        except ImageryError:
            raise  # the request was at fault (bounds, CRS), not the dataset
        except RasterioIOError as exc:
            cache.evict(uri)
            if "://" in uri:
                self._failed_remote.add(uri)
            raise _classify(uri, exc) from exc
        except BaseException:
            cache.evict(uri)
            raise
        else:
            # Reachable again: GDAL's cache may serve it, and the set does not grow forever.
            self._failed_remote.discard(uri)

    def _thread_cache(self) -> _OpenDatasets:
        cache: _OpenDatasets | None = getattr(self._local, "cache", None)
        if cache is None:
            cache = self._local.cache = _OpenDatasets(MAX_OPEN_PER_THREAD)
            with self._caches_lock:
                # Threads that ended cannot use their datasets again: close them here.
                for thread, old in self._caches:
                    if not thread.is_alive():
                        old.close()
                self._caches = [(t, c) for t, c in self._caches if t.is_alive()]
                self._caches.append((threading.current_thread(), cache))
        return cache

    def _env(self, uri: str) -> rasterio.Env:
        options: dict[str, str] = {}
        if uri in self._failed_remote:
            # GDAL remembers a remote file it failed to open and answers later opens from
            # that memory ("does not exist"): a retry would never reach the server again,
            # and an unreachable host would read as an unsupported file.
            options["CPL_VSIL_CURL_NON_CACHED"] = REMOTE_FILE_SYSTEMS
        return rasterio.Env(
            GDAL_HTTP_TIMEOUT=max(1, math.ceil(self.http_timeout_s)),
            # Retries belong to the stage runner (retry topics), not inside one read.
            GDAL_HTTP_MAX_RETRY=0,
            # Listing a remote directory to look for sidecar files costs a request per read.
            GDAL_DISABLE_READDIR_ON_OPEN="EMPTY_DIR",
            **options,
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
        bands = _data_bands(src)
        pixels = src.read(
            bands,
            window=window,
            out_shape=(len(bands), out_h, out_w),
            resampling=self.resampling,
            boundless=not inside,
            fill_value=nodata,
        )
        if MaskFlags.per_dataset in src.mask_flag_enums[bands[0] - 1]:  # alpha or GDAL mask
            valid = src.dataset_mask(window=window, out_shape=(out_h, out_w), boundless=not inside)
            if not valid.all():
                nodata = PADDING_NODATA if nodata is None else nodata
                pixels[:, valid == 0] = nodata
        transform = src.window_transform(window) @ Affine.scale(width / out_w, height / out_h)
        return Chip.from_array(pixels, crs=crs_string(src.crs), transform=transform, nodata=nodata)


class _OpenDatasets:
    """One thread's open datasets by URI, least recently used first."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._open: OrderedDict[str, tuple[tuple[int, int, int] | None, DatasetReader]] = (
            OrderedDict()
        )

    def get(self, uri: str) -> DatasetReader:
        identity = _file_identity(uri)
        entry = self._open.pop(uri, None)
        if entry is not None and (entry[0] != identity or entry[1].closed):
            entry[1].close()  # the file was replaced since: read the new one
            entry = None
        if entry is None:
            entry = (identity, rasterio.open(uri))
        self._open[uri] = entry
        while len(self._open) > self.size:
            _, (_, oldest) = self._open.popitem(last=False)
            oldest.close()
        return entry[1]

    def evict(self, uri: str) -> None:
        entry = self._open.pop(uri, None)
        if entry is not None:
            entry[1].close()

    def close(self) -> None:
        while self._open:
            _, (_, src) = self._open.popitem()
            src.close()


def _file_identity(uri: str) -> tuple[int, int, int] | None:
    """Inode, size and mtime of a local file — what tells it from a replacement written
    under the same name (an atomic rename) — or None for a URL or an absent file."""
    if "://" in uri:
        return None
    try:
        stat = os.stat(uri)
    except OSError:
        return None
    return (stat.st_ino, stat.st_size, stat.st_mtime_ns)


def _data_bands(src: DatasetReader) -> list[int]:
    """The 1-based indexes of the bands that are data: all but an alpha band."""
    bands = [
        i for i, ci in zip(src.indexes, src.colorinterp, strict=True) if ci != ColorInterp.alpha
    ]
    return bands or list(src.indexes)


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
    if "response code: 5" in lowered or "response code: 429" in lowered:
        return ImageryUnavailable(f"{uri}: {text}")
    if is_remote and ("curl error" in lowered or "configuration options not defined" in lowered):
        # CURL errors are network failures: refused, reset, DNS, TLS handshake. An object
        # store without credentials cannot be reached either, until the settings are fixed.
        return ImageryUnreachable(f"{uri}: {text}")
    if "response code: 404" in lowered or "response code: 410" in lowered:
        return ImageryMissing(f"{uri}: {text}")
    if "response code: 401" in lowered or "response code: 403" in lowered:
        return ImageryUnauthorized(f"{uri}: {text}")
    if "response code: 4" in lowered:
        return ImageryRefused(f"{uri}: {text}")
    if not is_remote and not Path(uri).exists():
        return ImageryMissing(f"no such file: {uri}")
    if "not recognized as" in lowered:
        # GDAL knows no driver for these bytes (text, an HTML error page, a zip): no
        # image format we read, which is not the same as an image whose bytes are broken.
        return ImageryUnsupported(f"{uri}: {text}")
    return ImageryCorrupt(f"{uri}: {text}")
