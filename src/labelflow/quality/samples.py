"""Quality checks on a materialized sample: is the chip worth training on, is the mask sane?

Each check returns a :class:`~labelflow.model.CheckResult` with a stable code, the measured
value and the threshold, pass or fail, so a snapshot's QC gate and a dashboard can both say
*why* a sample was held back:

- ``sample.nodata_fraction``: share of pixels that are nodata in every band (imagery that
  does not cover the chip: a scene edge, a rotated footprint, bounds past the image).
- ``sample.blank``: the valid pixels barely vary (a cloud, a black tile, a failed render);
  measured as their standard deviation.
- ``sample.saturated``: share of valid values at the dtype's extremes (blown-out or crushed
  exposure).
- ``sample.mask_coverage``: share of labelled pixels; outside ``[min, max]`` suggests a label
  drawn on the wrong image or a class painted over everything.
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, Field

from labelflow.imagery.base import Chip
from labelflow.masks import BACKGROUND
from labelflow.model import CheckResult


class SampleRules(BaseModel):
    """Thresholds of the sample checks (all fractions in ``[0, 1]``)."""

    max_nodata_fraction: float = Field(0.5, ge=0, le=1)
    min_std: float = Field(2.0, ge=0, description="Below this, valid pixels count as blank.")
    max_saturated_fraction: float = Field(0.25, ge=0, le=1)
    min_mask_coverage: float = Field(
        0.0, ge=0, le=1, description="0 allows empty masks: negatives are training data too."
    )
    max_mask_coverage: float = Field(1.0, ge=0, le=1)
    ignore_index: int | None = Field(
        255, description="Mask value that is neither background nor a class."
    )


def check_sample(chip: Chip, mask: np.ndarray, rules: SampleRules) -> list[CheckResult]:
    """All sample checks, in a fixed order."""
    valid = _valid_pixels(chip)
    return [
        _nodata_fraction(valid, rules),
        _blank(chip, valid, rules),
        _saturated(chip, valid, rules),
        _mask_coverage(mask, rules),
    ]


def all_passed(checks: list[CheckResult]) -> bool:
    return all(check.passed for check in checks)


def _valid_pixels(chip: Chip) -> np.ndarray:
    """``(h, w)`` True where the pixel has data: nodata means nodata in every band."""
    if chip.nodata is None:
        return np.ones((chip.height, chip.width), dtype=bool)
    if np.isnan(chip.nodata):
        return ~np.isnan(chip.pixels).all(axis=0)
    return ~(chip.pixels == chip.nodata).all(axis=0)


def _nodata_fraction(valid: np.ndarray, rules: SampleRules) -> CheckResult:
    fraction = 1.0 - float(valid.mean()) if valid.size else 1.0
    return CheckResult(
        code="sample.nodata_fraction",
        passed=fraction <= rules.max_nodata_fraction,
        value=fraction,
        threshold=rules.max_nodata_fraction,
        message="" if fraction <= rules.max_nodata_fraction else "imagery does not cover the chip",
    )


def _blank(chip: Chip, valid: np.ndarray, rules: SampleRules) -> CheckResult:
    values = chip.pixels[:, valid]
    if values.size == 0:
        return CheckResult(
            code="sample.blank", passed=False, threshold=rules.min_std, message="no valid pixels"
        )
    std = float(values.astype(np.float64).std())
    return CheckResult(
        code="sample.blank",
        passed=std >= rules.min_std,
        value=std,
        threshold=rules.min_std,
        message="" if std >= rules.min_std else "valid pixels are (nearly) uniform",
    )


def _saturated(chip: Chip, valid: np.ndarray, rules: SampleRules) -> CheckResult:
    values = chip.pixels[:, valid]
    fraction = 0.0
    if values.size and np.issubdtype(values.dtype, np.integer):
        info = np.iinfo(values.dtype)
        fraction = float(((values == info.min) | (values == info.max)).mean())
    passed = fraction <= rules.max_saturated_fraction
    return CheckResult(
        code="sample.saturated",
        passed=passed,
        value=fraction,
        threshold=rules.max_saturated_fraction,
        message="" if passed else "too many values at the dtype's extremes",
    )


def _mask_coverage(mask: np.ndarray, rules: SampleRules) -> CheckResult:
    labelled = mask != BACKGROUND
    if rules.ignore_index is not None:
        labelled &= mask != rules.ignore_index
    coverage = float(labelled.mean()) if mask.size else 0.0
    too_low = coverage < rules.min_mask_coverage
    too_high = coverage > rules.max_mask_coverage
    return CheckResult(
        code="sample.mask_coverage",
        passed=not (too_low or too_high),
        value=coverage,
        threshold=rules.min_mask_coverage if too_low else rules.max_mask_coverage,
        message="below minimum" if too_low else "above maximum" if too_high else "",
    )
