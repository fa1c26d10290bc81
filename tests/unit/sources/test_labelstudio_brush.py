"""Brush regions: Label Studio's RLE decoded and checked, traced into exact pixel polygons."""

from __future__ import annotations

import numpy as np
import pytest
from rasterio.features import rasterize
from shapely.geometry import shape

from labelflow.sources.base import SourceFormatError
from labelflow.sources.labelstudio_brush import brush_mask, decode_rle, mask_to_geometry
from labelstudio_support import encode_brush


def _masks() -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    blob = np.zeros((40, 60), bool)
    blob[5:30, 10:50] = True
    blob[12:20, 20:30] = False  # a hole
    blob[35, 55] = True  # a speck, apart from the blob
    checker = np.indices((9, 11)).sum(axis=0) % 2 == 0  # pixels touching only at corners
    return [blob, checker, *(rng.random((23, 31)) < p for p in (0.1, 0.5, 0.9))]


@pytest.mark.parametrize("mask", _masks())
def test_rle_decodes_to_the_painted_pixels(mask: np.ndarray) -> None:
    height, width = mask.shape
    value = {"format": "rle", "rle": encode_brush(mask), "brushlabels": ["tree"]}
    assert (brush_mask(value, width, height) == mask).all()


@pytest.mark.parametrize("mask", _masks())
def test_traced_polygons_rasterize_back_to_exactly_the_same_pixels(mask: np.ndarray) -> None:
    geometry = mask_to_geometry(mask)
    assert geometry is not None and geometry["type"] == "MultiPolygon"
    polygons = shape(geometry)
    assert polygons.is_valid
    assert polygons.area == mask.sum()  # pixel edges: area is the pixel count, exactly
    # The pipeline's rule: a pixel is in a shape when its centre is.
    burned = rasterize([(geometry, 1)], out_shape=mask.shape, fill=0, dtype=np.uint8)
    assert (burned.astype(bool) == mask).all()


def test_alpha_below_half_is_not_painted() -> None:
    # Antialiased edges of a stroke: alpha 100 (less than half covered) and 200.
    rgba = np.zeros((1, 3, 4), np.uint8)
    rgba[0, 1, 3], rgba[0, 2, 3] = 100, 200
    rle = _literal_rle(rgba.ravel().tolist())
    assert brush_mask({"format": "rle", "rle": rle}, 3, 1).tolist() == [[False, False, True]]


def test_decoded_length_must_be_width_times_height_times_four() -> None:
    mask = np.ones((4, 5), bool)
    value = {"format": "rle", "rle": encode_brush(mask)}
    with pytest.raises(SourceFormatError) as err:
        brush_mask(value, 5, 5)
    assert err.value.code == "brush.size_mismatch"
    assert "5*5*4 = 100" in err.value.message


@pytest.mark.parametrize(
    ("rle", "code"),
    [
        ([], "brush.rle_invalid"),
        ("not a list", "brush.rle_invalid"),
        ([1, 2, 300, 4, 5, 6, 7], "brush.rle_invalid"),
        (encode_brush(np.ones((8, 8), bool))[:-3], "brush.rle_invalid"),  # cut short
        ([255, 255, 255, 255, 0, 0, 0, 0], "brush.rle_invalid"),  # claims 4 billion values
    ],
)
def test_malformed_rle_is_refused_with_a_code(rle: object, code: str) -> None:
    with pytest.raises(SourceFormatError) as err:
        decode_rle(rle)  # type: ignore[arg-type]
    assert err.value.code == code


def test_a_brush_in_another_format_is_refused() -> None:
    with pytest.raises(SourceFormatError) as err:
        brush_mask({"format": "png", "png": "…"}, 4, 4)
    assert err.value.code == "brush.format_unsupported"


def test_an_empty_mask_has_no_geometry() -> None:
    assert mask_to_geometry(np.zeros((4, 4), bool)) is None


def _literal_rle(values: list[int]) -> list[int]:
    """One literal chunk of byte values, written by hand from the format's description."""
    bits = f"{len(values):032b}" + f"{7:05b}" + "".join(f"{c - 1:04b}" for c in (3, 4, 8, 16))
    bits += "0" + "10" + f"{len(values) - 1:08b}" + "".join(f"{v:08b}" for v in values)
    bits += "0" * (-len(bits) % 8)
    return [int(bits[i : i + 8], 2) for i in range(0, len(bits), 8)]
