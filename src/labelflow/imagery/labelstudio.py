"""The image a Label Studio annotator saw, fetched from Label Studio with its API token.

Percent coordinates in Label Studio are relative to exactly the image its editor displayed,
so that image — not some file with a similar name — is what masks must be aligned with.
``ImageRef.uri`` is the task's image as Label Studio serves it:

- ``/data/local-files/?d=…`` (local-files storage), ``/data/upload/…`` (uploads),
  ``/tasks/<id>/presign/?fileuri=…`` or ``/tasks/<id>/resolve/?fileuri=…`` (cloud storage):
  paths on the Label Studio server, fetched with ``Authorization: Token …``. A cloud answer
  is a redirect to a presigned URL, followed *without* the token (it belongs to Label
  Studio, not to the bucket), or the bytes proxied by Label Studio;
- an absolute ``http(s)`` URL: with the token only when it points at Label Studio itself.

The bytes are decoded with GDAL (PNG, JPEG, TIFF and whatever else it reads). An alpha band
is not data: it becomes validity, its transparent pixels nodata. The decoded size must equal
the size the labels were drawn on (``ImageRef.width``/``height``, Label Studio's
``original_width``/``original_height``); anything else would misplace every label, so it is
``imagery.size_mismatch``.

Georeference comes from the task data when the importer put it there (see
:class:`~labelflow.sources.labelstudio.LabelStudioOptions`): ``bounds`` in ``bounds_crs``
span the whole image; or ``scene_uri`` plus a pixel ``window`` name the GeoTIFF/COG the image
was cut from. With ``read_original`` the chip's pixels are read from that scene's window
instead of the displayed image, after checking that the window has the displayed size.

Errors: timeouts are ``imagery.timeout``, refused connections ``imagery.unreachable``, 429 and
5xx ``imagery.unavailable`` (all transient); 404/410 ``imagery.missing``; a refused token
``imagery.unauthorized``; other 4xx ``imagery.refused``; bytes that are no image format
``imagery.unsupported``, an image whose bytes are broken ``imagery.corrupt``.
"""

from __future__ import annotations

import warnings
from typing import Self
from urllib.parse import urljoin, urlsplit

import httpx
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import ColorInterp, Resampling
from rasterio.errors import CRSError, NotGeoreferencedWarning, RasterioIOError
from rasterio.io import MemoryFile
from rasterio.transform import from_bounds
from rasterio.windows import Window

from labelflow.imagery.base import (
    DEFAULT_MAX_CHIP_SIZE,
    Chip,
    ImageryCorrupt,
    ImageryCrsInvalid,
    ImageryMissing,
    ImageryNotConfigured,
    ImageryRefused,
    ImagerySizeMismatch,
    ImageryTimeout,
    ImageryUnauthorized,
    ImageryUnavailable,
    ImageryUnreachable,
    ImageryUnsupported,
    crs_string,
)
from labelflow.imagery.geotiff import GeoTiffProvider
from labelflow.model import ImageRef

MAX_IMAGE_BYTES = 512 * 1024 * 1024
"""An image bigger than this is not a labelling image; reading it whole would exhaust a
worker's memory before decoding even starts."""

MAX_REDIRECTS = 5

INVALID_FILL = 0
"""Value written into every band of a pixel the alpha band marks transparent (declared as the
chip's nodata), so sample checks count it as missing instead of as dark data."""


class LabelStudioProvider:
    """Reads the chip of a Label Studio task's image. ``base_url``/``token`` may be unset
    when only absolute URLs are read (a relative one is then ``imagery.not_configured``)."""

    def __init__(
        self,
        base_url: str | None,
        token: str | None,
        *,
        timeout_s: float = 30.0,
        max_size: int = DEFAULT_MAX_CHIP_SIZE,
        read_original: bool = False,
        geotiff: GeoTiffProvider | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/") + "/" if base_url else None
        self._origin = _origin(self.base_url) if self.base_url else None
        self._token = token
        self.max_size = max_size
        self.read_original = read_original
        self.geotiff = geotiff or GeoTiffProvider(max_size=max_size, http_timeout_s=timeout_s)
        self.client = httpx.Client(timeout=timeout_s, follow_redirects=False)

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def read(self, ref: ImageRef) -> Chip:
        if self.read_original and ref.scene_uri:
            return self._read_original(ref)
        return self.decode(self.fetch(ref.uri), ref)

    # --- bytes ---------------------------------------------------------------------------
    def fetch(self, uri: str) -> bytes:
        """The bytes Label Studio serves for ``uri``, following its redirects."""
        url = self._absolute(uri)
        for _ in range(MAX_REDIRECTS + 1):
            location, content = self._get(url)
            if location is None:
                return content
            url = urljoin(url, location)
        raise ImageryRefused(f"{uri}: more than {MAX_REDIRECTS} redirects")

    def _absolute(self, uri: str) -> str:
        if uri.startswith(("http://", "https://")):
            return uri
        if uri.startswith("/"):
            if self.base_url is None:
                raise ImageryNotConfigured(
                    f"{uri} is served by Label Studio, but no Label Studio URL is configured "
                    "(LABELFLOW_LABELSTUDIO_URL)"
                )
            return self.base_url + uri.lstrip("/")
        raise ImageryMissing(
            f"{uri!r} is not an image Label Studio serves (expected /data/…, /tasks/…, or "
            "an http(s) URL; the source rewrites cloud URIs to Label Studio's presign URL)"
        )

    def _get(self, url: str) -> tuple[str | None, bytes]:
        """``(redirect location, b"")`` or ``(None, body)``; failures classified."""
        # The token is Label Studio's: never send it to a bucket or another server.
        ours = self._origin is not None and _origin(url) == self._origin
        headers = {"Authorization": f"Token {self._token}"} if ours and self._token else {}
        try:
            with self.client.stream("GET", url, headers=headers) as response:
                status = response.status_code
                if response.is_redirect and "location" in response.headers:
                    return response.headers["location"], b""
                if status in (401, 403):
                    raise ImageryUnauthorized(f"{url}: HTTP {status}: check the API token")
                if status in (404, 410):
                    raise ImageryMissing(f"{url}: HTTP {status}")
                if status == 429 or status >= 500:
                    raise ImageryUnavailable(f"{url}: HTTP {status}")
                if status >= 400:
                    raise ImageryRefused(f"{url}: HTTP {status}")
                return None, _read_bounded(response, url)
        except httpx.TimeoutException as exc:
            raise ImageryTimeout(f"{url}: {exc!r}") from exc
        except httpx.TransportError as exc:  # refused, reset, DNS, TLS
            raise ImageryUnreachable(f"{url}: {exc!r}") from exc

    # --- pixels --------------------------------------------------------------------------
    def decode(self, payload: bytes, ref: ImageRef) -> Chip:
        """The chip of an encoded image, checked against the size the labels were drawn on."""
        _check_complete(payload, ref.uri)
        try:
            with warnings.catch_warnings():
                # A PNG or JPEG has no georeference; ours comes from the task data.
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
                with MemoryFile(payload) as memfile, memfile.open() as src:
                    _check_size(ref, src.width, src.height)
                    out_w, out_h = _fitted(src.width, src.height, self.max_size)
                    alpha = [i + 1 for i, c in enumerate(src.colorinterp) if c == ColorInterp.alpha]
                    data = [i for i in range(1, src.count + 1) if i not in alpha] or [1]
                    pixels = src.read(data, out_shape=(len(data), out_h, out_w), resampling=_RS)
                    valid = (
                        src.read(alpha[0], out_shape=(out_h, out_w), resampling=_RS) > 0
                        if alpha
                        else None
                    )
                    nodata = src.nodata
                    size = (src.width, src.height)
        except RasterioIOError as exc:
            if "not recognized as" in str(exc):  # no format GDAL reads: an HTML page, text …
                raise ImageryUnsupported(f"{ref.uri}: not an image: {exc}") from exc
            raise ImageryCorrupt(f"{ref.uri}: cannot decode the image: {exc}") from exc
        if valid is not None and not valid.all():
            pixels[:, ~valid] = INVALID_FILL
            nodata = INVALID_FILL
        crs, transform = self._georeference(ref, size)
        transform = transform @ Affine.scale(size[0] / out_w, size[1] / out_h)
        return Chip.from_array(pixels, crs=crs, transform=transform, nodata=nodata)

    def _georeference(self, ref: ImageRef, size: tuple[int, int]) -> tuple[str | None, Affine]:
        """CRS and transform of the whole displayed image (identity when it has none)."""
        width, height = size
        if ref.scene_uri and ref.window:
            col, row, w, h = ref.window
            scene = self.geotiff.metadata(ref.scene_uri)
            transform = (
                scene.transform @ Affine.translation(col, row) @ Affine.scale(w / width, h / height)
            )
            return scene.crs, transform
        if ref.bounds is not None:
            crs = None
            if ref.bounds_crs:
                try:
                    crs = crs_string(CRS.from_user_input(ref.bounds_crs))
                except CRSError as exc:
                    raise ImageryCrsInvalid(f"unknown CRS {ref.bounds_crs!r}: {exc}") from exc
            return crs, from_bounds(*ref.bounds, width=width, height=height)
        return None, Affine.identity()

    def _read_original(self, ref: ImageRef) -> Chip:
        """The chip from the scene the displayed image was cut from, at the same pixels."""
        assert ref.scene_uri is not None
        if ref.window:
            col, row, w, h = ref.window
            _check_size(ref, w, h)
            return self.geotiff.read_path(ref.scene_uri, window=Window(col, row, w, h))
        chip = self.geotiff.read_path(ref.scene_uri, bounds=ref.bounds, bounds_crs=ref.bounds_crs)
        _check_size(ref, chip.width, chip.height)
        return chip


_RS = Resampling.bilinear


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme.lower(), parts.netloc.lower()


def _read_bounded(response: httpx.Response, url: str) -> bytes:
    """The body, refusing one larger than :data:`MAX_IMAGE_BYTES` before it is all read."""
    declared = response.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > MAX_IMAGE_BYTES:
        raise ImageryRefused(f"{url}: {declared} bytes exceed {MAX_IMAGE_BYTES}")
    chunks, total = [], 0
    for chunk in response.iter_bytes():
        total += len(chunk)
        if total > MAX_IMAGE_BYTES:
            raise ImageryRefused(f"{url}: larger than {MAX_IMAGE_BYTES} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_END = b"IEND\xaeB`\x82"
JPEG_START, JPEG_END = b"\xff\xd8", b"\xff\xd9"


def _check_complete(payload: bytes, uri: str) -> None:
    """GDAL decodes a truncated PNG or JPEG without an error, the missing rows black: a chip
    that looks valid and is not. Both formats end with a fixed marker, so check for it."""
    if payload.startswith(PNG_SIGNATURE) and not payload.endswith(PNG_END):
        raise ImageryCorrupt(f"{uri}: the PNG is truncated (no IEND chunk at its end)")
    if payload.startswith(JPEG_START) and not payload.rstrip(b"\x00").endswith(JPEG_END):
        raise ImageryCorrupt(f"{uri}: the JPEG is truncated (no end-of-image marker)")


def _check_size(ref: ImageRef, width: int, height: int) -> None:
    if ref.width and ref.height and (ref.width, ref.height) != (width, height):
        raise ImagerySizeMismatch(
            f"{ref.uri} is {width}x{height} px but its labels were drawn on "
            f"{ref.width}x{ref.height} px: the image changed since it was labelled"
        )


def _fitted(width: int, height: int, max_size: int) -> tuple[int, int]:
    scale = max(width, height) / max_size
    if scale <= 1:
        return width, height
    return max(1, round(width / scale)), max(1, round(height / scale))
