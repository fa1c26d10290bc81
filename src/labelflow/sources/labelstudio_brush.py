"""Label Studio brush regions: decode their RLE and turn them into exact pixel polygons.

A brush region stores the annotator's strokes as the RGBA pixels of an image-sized canvas,
``original_width * original_height * 4`` bytes, compressed with the bit-packed run-length
format Label Studio's editor writes (``value.format == "rle"``, ``value.rle``: a list of byte
values). The format, read most significant bit first:

1. a header: 32 bits, the number of values that follow once decoded; 5 bits, the width of one
   value minus one (8 for bytes); four 4-bit fields, the widths minus one of the four run
   length classes;
2. then chunks until that many values are out: 1 bit, whether the chunk is a *run* (one value
   repeated) or *literal* (values one by one); 2 bits, which length class; that many bits,
   the chunk's length minus one; then one value (a run) or ``length`` values (literal).

The mask is the alpha channel: a pixel is painted when its alpha is at least
:data:`ALPHA_THRESHOLD`, i.e. more than half covered, the same "centre inside" rule the
polygons are rasterized with.

Why polygons and not a raster label: every later stage (validate, rasterize, the catalog's
vector labels) speaks polygons, and a mask can become polygons *without loss*. The polygons
traced along pixel edges (:func:`rasterio.features.shapes`) contain exactly the centres of
the painted pixels and no other, so rasterizing them again with the centre rule burns the same
pixels; the round trip is exact, checked in the tests.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from rasterio.features import shapes

from labelflow.sources.base import SourceFormatError

ALPHA_THRESHOLD = 128
"""Antialiased stroke edges have partial alpha; a pixel counts when at least half covered."""

MAX_BRUSH_PIXELS = 100_000_000
"""A header claiming more values than this is corrupt: decoding it would allocate gigabytes."""


def decode_rle(rle: Sequence[int]) -> np.ndarray:
    """The flat ``uint8`` values of a Label Studio brush RLE (see the module docstring)."""
    data = np.asarray(rle)
    if data.ndim != 1 or data.size < 7 or data.dtype.kind not in "iu":
        raise SourceFormatError("brush.rle_invalid", "a brush RLE is a list of byte values")
    if data.min() < 0 or data.max() > 255:
        raise SourceFormatError("brush.rle_invalid", "brush RLE values must be bytes (0-255)")
    bits = np.unpackbits(data.astype(np.uint8))
    reader = _BitReader(bits)
    try:
        count = reader.read(32)
        word = reader.read(5) + 1
        classes = [reader.read(4) + 1 for _ in range(4)]
        if count > MAX_BRUSH_PIXELS * 4:
            raise SourceFormatError("brush.rle_invalid", f"the RLE claims {count} values")
        out = np.empty(count, dtype=np.uint32)
        done = 0
        while done < count:
            is_run = reader.read(1)
            length = reader.read(classes[reader.read(2)]) + 1
            if done + length > count:
                raise SourceFormatError(
                    "brush.rle_invalid", f"a chunk runs past the {count} values the header claims"
                )
            if is_run:
                out[done : done + length] = reader.read(word)
            else:
                out[done : done + length] = reader.read_many(word, length)
            done += length
    except EOFError as exc:
        raise SourceFormatError("brush.rle_invalid", "the brush RLE ends early") from exc
    if out.size and out.max() > 255:
        raise SourceFormatError("brush.rle_invalid", f"{word}-bit values are not RGBA bytes")
    return out.astype(np.uint8)


class _BitReader:
    """Reads unsigned big-endian integers of any width from an array of bits."""

    def __init__(self, bits: np.ndarray) -> None:
        self.bits = bits
        self.pos = 0

    def read(self, width: int) -> int:
        end = self.pos + width
        if end > self.bits.size:
            raise EOFError
        value = 0
        for bit in self.bits[self.pos : end]:
            value = (value << 1) | int(bit)
        self.pos = end
        return value

    def read_many(self, width: int, n: int) -> np.ndarray:
        """``n`` consecutive values of ``width`` bits, vectorized (literal chunks are long)."""
        end = self.pos + width * n
        if end > self.bits.size:
            raise EOFError
        chunk = self.bits[self.pos : end].reshape(n, width).astype(np.uint32)
        self.pos = end
        weights = (1 << np.arange(width - 1, -1, -1)).astype(np.uint32)
        return chunk @ weights


def brush_mask(value: dict[str, Any], width: int, height: int) -> np.ndarray:
    """The ``bool`` mask ``(height, width)`` of one brush region's ``value``."""
    if value.get("format", "rle") != "rle" or "rle" not in value:
        raise SourceFormatError(
            "brush.format_unsupported",
            f"brush format {value.get('format')!r} is not Label Studio's RLE",
        )
    flat = decode_rle(value["rle"])
    if flat.size != width * height * 4:
        raise SourceFormatError(
            "brush.size_mismatch",
            f"the brush decodes to {flat.size} values, not width*height*4 = "
            f"{width}*{height}*4 = {width * height * 4}: it was drawn on another image size",
        )
    return flat.reshape(height, width, 4)[:, :, 3] >= ALPHA_THRESHOLD


def mask_to_geometry(mask: np.ndarray) -> dict[str, Any] | None:
    """A GeoJSON MultiPolygon in pixel coordinates tracing ``mask`` exactly; None if empty.

    One MultiPolygon per brush region, not one feature per blob: a stroke's stray specks are
    part of it, and checking them one by one against the minimum area would refuse the whole
    region for a speck.
    """
    if not mask.any():
        return None
    polygons = [
        geometry["coordinates"]
        for geometry, value in shapes(mask.astype(np.uint8), mask=mask, connectivity=4)
        if value == 1
    ]
    return {"type": "MultiPolygon", "coordinates": polygons}
