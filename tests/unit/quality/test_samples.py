"""Sample checks flag what they name, pass plausible samples of any dtype and band count, and
the whole-array reductions agree with a plain computation on the selected values."""

from __future__ import annotations

import numpy as np
import pytest
from affine import Affine

from labelflow.imagery.base import Chip
from labelflow.model import CheckResult
from labelflow.quality.samples import (
    SampleRules,
    _valid_pixels,
    all_passed,
    check_sample,
    full_scale,
    value_stats,
)

RULES = SampleRules()


def chip(pixels: np.ndarray, nodata: float | None = 0) -> Chip:
    return Chip.from_array(pixels, crs="EPSG:3857", transform=Affine.identity(), nodata=nodata)


def textured(h: int = 32, w: int = 32) -> np.ndarray:
    rng = np.random.default_rng(1)
    return rng.integers(30, 220, size=(3, h, w), dtype=np.uint8)


def checks_of(c: Chip, mask: np.ndarray | None = None, rules: SampleRules = RULES) -> dict:
    mask = np.zeros((c.height, c.width), np.uint8) if mask is None else mask
    results = check_sample(c, mask, rules)
    assert all(isinstance(r, CheckResult) for r in results)
    return {r.code: r for r in results}


def test_plausible_sample_passes_every_check() -> None:
    mask = np.zeros((32, 32), np.uint8)
    mask[:8] = 1
    results = check_sample(chip(textured()), mask, RULES)
    assert [r.code for r in results] == [
        "sample.nodata_fraction",
        "sample.blank",
        "sample.saturated",
        "sample.mask_coverage",
    ]
    assert all_passed(results), results
    assert results[3].value == 0.25


def test_nodata_fraction_counts_pixels_nodata_in_every_band() -> None:
    pixels = textured()
    pixels[:, :, :24] = 0  # 75 % nodata in all bands
    pixels[0, 0, 0] = 9  # one band with data keeps the pixel valid
    result = checks_of(chip(pixels))["sample.nodata_fraction"]
    assert not result.passed
    assert result.value == (24 * 32 - 1) / (32 * 32)
    assert checks_of(chip(pixels, nodata=None))["sample.nodata_fraction"].passed


def test_uniform_chip_is_blank_and_all_nodata_is_blank_too() -> None:
    assert not checks_of(chip(np.full((3, 32, 32), 128, np.uint8)))["sample.blank"].passed
    empty = checks_of(chip(np.zeros((3, 32, 32), np.uint8)))
    assert not empty["sample.blank"].passed
    assert empty["sample.nodata_fraction"].value == 1.0


def test_blown_out_chip_is_saturated() -> None:
    pixels = textured()
    pixels[:, :20] = 255
    result = checks_of(chip(pixels))["sample.saturated"]
    assert not result.passed and result.value is not None and result.value > 0.6


def test_mask_coverage_outside_bounds_fails_with_the_bound_it_broke() -> None:
    rules = SampleRules(min_mask_coverage=0.1, max_mask_coverage=0.9)
    too_low = checks_of(chip(textured()), rules=rules)["sample.mask_coverage"]
    assert (too_low.passed, too_low.threshold) == (False, 0.1)
    full = np.full((32, 32), 2, np.uint8)
    too_high = checks_of(chip(textured()), full, rules)["sample.mask_coverage"]
    assert (too_high.passed, too_high.threshold) == (False, 0.9)
    ignored = np.full((32, 32), 255, np.uint8)
    assert checks_of(chip(textured()), ignored)["sample.mask_coverage"].value == 0.0


def reflectance(h: int = 32, w: int = 32) -> np.ndarray:
    """Surface reflectance of vegetation and soil: float32 in 0.02..0.35."""
    rng = np.random.default_rng(2)
    return rng.uniform(0.02, 0.35, size=(4, h, w)).astype(np.float32)


def test_float_reflectance_passes_and_a_uniform_one_is_blank() -> None:
    checks = checks_of(chip(reflectance(), nodata=None))
    assert all(c.passed for c in checks.values()), checks
    assert checks["sample.saturated"].value == 0.0, "float imagery has no known ceiling"
    haze = np.full((4, 32, 32), 0.3, np.float32) + reflectance() * 0.001
    assert not checks_of(chip(haze, nodata=None))["sample.blank"].passed


def test_float_nan_is_nodata_declared_or_not() -> None:
    pixels = reflectance()
    pixels[:, :, :24] = np.nan
    pixels[1, 0, 30] = np.nan  # one band missing: the pixel stays, the value is skipped
    for nodata in (float("nan"), None, -9999.0):
        checks = checks_of(chip(pixels, nodata=nodata))
        assert checks["sample.nodata_fraction"].value == 0.75
        assert checks["sample.blank"].passed and np.isfinite(checks["sample.blank"].value)
    all_nan = np.full((4, 8, 8), np.nan, np.float32)
    blank = checks_of(chip(all_nan, nodata=None))["sample.blank"]
    assert (blank.passed, blank.message) == (False, "no valid pixels")


def test_twelve_bit_imagery_in_uint16_is_measured_against_4095() -> None:
    rng = np.random.default_rng(3)
    pixels = rng.integers(200, 3000, size=(3, 32, 32), dtype=np.uint16)
    checks = checks_of(chip(pixels))
    assert all(c.passed for c in checks.values()), checks
    cloud = np.full((3, 32, 32), 3900, np.uint16) + rng.integers(0, 20, (3, 32, 32), np.uint16)
    assert not checks_of(chip(cloud))["sample.blank"].passed, "std 6 of 4095 is blank"
    pixels[:, :20] = 4095  # the sensor's ceiling, far below the dtype's
    saturated = checks_of(chip(pixels))["sample.saturated"]
    assert not saturated.passed and saturated.value == pytest.approx(20 / 32)


def test_single_band_chip_is_checked_like_any_other() -> None:
    band = textured()[:1]
    assert all_passed(check_sample(chip(band), np.zeros((32, 32), np.uint8), RULES))
    assert not checks_of(chip(np.full((1, 32, 32), 77, np.uint8)))["sample.blank"].passed


@pytest.mark.parametrize(
    ("dtype", "low", "high", "expected"),
    [
        (np.uint8, 3, 9, (0, 255)),
        (np.int8, -3, 9, (-128, 127)),
        (np.uint16, 0, 255, (0, 255)),
        (np.uint16, 10, 4095, (0, 4095)),
        (np.uint16, 10, 4096, (0, 8191)),
        (np.uint16, 10, 60000, (0, 65535)),
        (np.int16, -1024, 1023, (-1024, 1023)),
        (np.int16, -1025, 0, (-2048, 2047)),
        (np.float32, 0.02, 0.4, (0.0, 1.0)),
        (np.float32, 3.0, 250.0, (0.0, 250.0)),
        (np.float64, -30.0, -2.0, (-30.0, 1.0)),
    ],
)
def test_full_scale_rule(dtype: type, low: float, high: float, expected: tuple) -> None:
    assert full_scale(np.dtype(dtype), low, high) == expected


def reference_stats(c: Chip) -> tuple[int, float, float]:
    """Count, standard deviation and share at the extremes, by selecting the valid values."""
    pixels = c.pixels
    floating = np.issubdtype(pixels.dtype, np.floating)
    missing = np.zeros(pixels.shape, bool)
    if c.nodata is not None:
        missing |= pixels == c.nodata
    if floating:
        missing |= np.isnan(pixels)
    values = pixels[:, ~missing.all(axis=0)].astype(np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return 0, 0.0, 0.0
    low, high = full_scale(pixels.dtype, values.min(), values.max())
    at_extremes = 0.0 if floating else float(((values == low) | (values == high)).mean())
    return values.size, float(values.std()), at_extremes


def _random_chips() -> list[Chip]:
    rng = np.random.default_rng(7)
    chips = []
    for dtype, nodata in [
        (np.uint8, 0),
        (np.uint8, None),
        (np.int8, -128),
        (np.uint16, 0),
        (np.uint16, 65535),
        (np.int16, -32768),
        (np.int32, -9999),
        (np.uint32, 0),
        (np.float32, None),
        (np.float32, float("nan")),
        (np.float64, -9999.0),
        (np.float16, None),
    ]:
        for bands in (1, 3, 4):
            if np.issubdtype(dtype, np.integer):
                info = np.iinfo(dtype)
                top = min(info.max, 5000)
                pixels = rng.integers(max(info.min, -300), top, (bands, 40, 24), dtype=dtype)
                pixels[:, 3, :5] = info.max  # saturated values
            else:
                pixels = rng.normal(0.2, 0.05, (bands, 40, 24)).astype(dtype)
                pixels[0, 5, 5] = np.nan
                pixels[-1, 6, 6] = np.inf
            if nodata is not None:
                pixels[:, :12] = nodata
                pixels[0, 0, :3] = 1  # partly nodata: still valid
            chips.append(chip(pixels, nodata=nodata))
    return chips


@pytest.mark.parametrize("c", _random_chips(), ids=lambda c: f"{c.pixels.dtype}-{c.nodata}")
def test_vectorized_stats_equal_a_plain_computation(c: Chip) -> None:
    stats = value_stats(c.pixels, _valid_pixels(c), c.nodata)
    count, std, at_extremes = reference_stats(c)
    assert stats.count == count
    assert stats.std == pytest.approx(std, rel=1e-5 if c.pixels.dtype.kind == "f" else 1e-12)
    assert stats.at_extremes / stats.count == pytest.approx(at_extremes, abs=1e-15)
