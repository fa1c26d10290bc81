"""Sample checks flag what they name, and pass a plausible sample."""

from __future__ import annotations

import numpy as np
from affine import Affine

from labelflow.imagery.base import Chip
from labelflow.model import CheckResult
from labelflow.quality.samples import SampleRules, all_passed, check_sample

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
