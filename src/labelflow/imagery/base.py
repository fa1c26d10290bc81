"""The imagery contract: a provider turns an :class:`ImageRef` into a :class:`Chip`, or raises
an :class:`ImageryError` that says whether trying again later can help.

Codes are stable (they end up in dead-letter headers and dashboards):

==========================  =========  ==================================================
code                        transient  meaning
==========================  =========  ==================================================
``imagery.timeout``         yes        the source did not answer in time
``imagery.unreachable``     yes        the source could not be reached (refused, DNS, reset)
``imagery.unavailable``     yes        the source answered 5xx / 429
``imagery.missing``         no         404, no such file
``imagery.corrupt``         no         a format we read, but its bytes are broken
``imagery.unsupported``     no         not an image format we read (text, HTML, zip, …)
``imagery.crs_invalid``     no         a CRS is unknown, absent, or cannot be transformed
``imagery.out_of_bounds``   no         the requested bounds do not intersect the image
``imagery.size_mismatch``   no         the image is not the size its labels were drawn on
``imagery.unauthorized``    no         the image server refused the credentials (401/403)
``imagery.refused``         no         any other 4xx, or more redirects than allowed
``imagery.not_configured``  no         a path on a server whose URL is not configured
==========================  =========  ==================================================
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from affine import Affine
from rasterio.crs import CRS
from rasterio.transform import array_bounds

from labelflow.errors import ClassifiedError
from labelflow.model import ImageRef

DEFAULT_MAX_CHIP_SIZE = 1024
"""Longest chip side in pixels; a larger window is downsampled. Without a bound, one task
drawn around a whole scene would make a gigapixel chip and exhaust a worker's memory."""


class ImageryError(ClassifiedError):
    """A classified imagery failure. Subclasses fix ``code`` and ``transient``."""

    code = "imagery.error"

    def __init__(self, message: str) -> None:
        super().__init__(self.code, message)


class ImageryTimeout(ImageryError):
    code = "imagery.timeout"
    transient = True


class ImageryUnavailable(ImageryError):
    code = "imagery.unavailable"
    transient = True


class ImageryUnreachable(ImageryError):
    code = "imagery.unreachable"
    transient = True


class ImageryMissing(ImageryError):
    code = "imagery.missing"


class ImageryCorrupt(ImageryError):
    code = "imagery.corrupt"


class ImageryUnsupported(ImageryError):
    code = "imagery.unsupported"


class ImageryCrsInvalid(ImageryError):
    code = "imagery.crs_invalid"


class ImageryOutOfBounds(ImageryError):
    code = "imagery.out_of_bounds"


class ImagerySizeMismatch(ImageryError):
    code = "imagery.size_mismatch"


class ImageryUnauthorized(ImageryError):
    code = "imagery.unauthorized"


class ImageryRefused(ImageryError):
    code = "imagery.refused"


class ImageryNotConfigured(ImageryError):
    code = "imagery.not_configured"


@dataclass(frozen=True, eq=False)
class Chip:
    """Pixels ``(bands, height, width)`` with their georeference.

    ``crs`` is ``"EPSG:<code>"`` where one matches, else WKT (``None`` for an image without
    one). ``content_hash`` identifies exactly what was read (pixels and georeference), for
    lineage: two reads with the same hash produced the same chip.
    """

    pixels: np.ndarray
    crs: str | None
    transform: Affine
    nodata: float | None
    content_hash: str

    @classmethod
    def from_array(
        cls, pixels: np.ndarray, *, crs: str | None, transform: Affine, nodata: float | None
    ) -> Chip:
        if pixels.ndim != 3:
            raise ValueError(f"chip pixels must be (bands, height, width), got {pixels.shape}")
        digest = hashlib.sha256()
        header = f"{pixels.shape}|{pixels.dtype.str}|{crs}|{tuple(transform)[:6]}|{nodata}"
        digest.update(header.encode())
        digest.update(np.ascontiguousarray(pixels))  # the buffer itself: no copy per chip
        return cls(pixels, crs, transform, nodata, digest.hexdigest())

    @property
    def height(self) -> int:
        return int(self.pixels.shape[1])

    @property
    def width(self) -> int:
        return int(self.pixels.shape[2])

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """``(minx, miny, maxx, maxy)`` in ``crs``."""
        west, south, east, north = array_bounds(self.height, self.width, self.transform)
        return (west, south, east, north)


class ImageryProvider(Protocol):
    """Reads the chip an image reference describes."""

    def read(self, ref: ImageRef) -> Chip: ...

    def close(self) -> None:
        """Release what reads keep open (connection pools, datasets)."""


def crs_string(crs: CRS | None) -> str | None:
    """Short and stable where possible (``EPSG:3857``), exact otherwise (WKT)."""
    if crs is None:
        return None
    epsg = crs.to_epsg()
    return f"EPSG:{epsg}" if epsg is not None else crs.to_wkt()
