"""Quality checks on a materialized sample: is the chip worth training on, is the mask sane?

Each check returns a :class:`~labelflow.model.CheckResult` with a stable code, the measured
value and the threshold, pass or fail, so a snapshot's QC gate and a dashboard can both say
*why* a sample was held back:

- ``sample.nodata_fraction``: share of pixels that are nodata in every band (imagery that
  does not cover the chip: a scene edge, a rotated footprint, bounds past the image). For
  float imagery NaN is nodata too, declared or not. The GeoTIFF reader turns an alpha band
  or GDAL mask into nodata (see :mod:`labelflow.imagery.geotiff`): validity, not data.
- ``sample.blank``: the valid values barely vary (a cloud, a black tile, a failed render);
  measured as their standard deviation *relative to the data's full scale*, so one threshold
  fits every dtype (see :func:`full_scale`). The default, 2/255, is two grey levels of an
  8-bit image.
- ``sample.saturated``: share of valid values at the extremes of the full scale (blown-out
  or crushed exposure). Only integer imagery is coded against a ceiling; float imagery has
  no known ceiling, and the share of values at its observed minimum or maximum says nothing
  (every image has both), so float chips always measure 0.
- ``sample.mask_coverage``: share of labelled pixels; outside ``[min, max]`` suggests a label
  drawn on the wrong image or a class painted over everything.

The statistics are whole-array reductions, never a copy of the selected pixels: a 512x512x3
chip costs well under a millisecond per check. Integer statistics are exact (integer sums),
so the values recorded in the catalog are the same on every machine.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, Field

from labelflow.imagery.base import Chip
from labelflow.masks import BACKGROUND
from labelflow.model import CheckResult


class SampleRules(BaseModel):
    """Thresholds of the sample checks (all fractions in ``[0, 1]``)."""

    max_nodata_fraction: float = Field(0.5, ge=0, le=1)
    min_std: float = Field(
        2 / 255,
        ge=0,
        le=1,
        description="Below this standard deviation, as a fraction of the data's full scale "
        "(see labelflow.quality.samples.full_scale), valid pixels count as blank.",
    )
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
    stats = value_stats(chip.pixels, valid, chip.nodata)
    return [
        _nodata_fraction(valid, rules),
        _blank(stats, rules),
        _saturated(stats, rules),
        _mask_coverage(mask, rules),
    ]


def all_passed(checks: list[CheckResult]) -> bool:
    return all(check.passed for check in checks)


@dataclass(frozen=True)
class ValueStats:
    """Statistics of the valid values of a chip (every band of every valid pixel)."""

    count: int
    std: float
    low: float
    """The bottom of the full scale (see :func:`full_scale`)."""
    high: float
    """The top of the full scale."""
    at_extremes: int
    """Values equal to ``low`` or ``high``; always 0 for float imagery."""


def full_scale(dtype: np.dtype, minimum: float, maximum: float) -> tuple[float, float]:
    """The range the values are coded in, from the dtype and the valid values' extremes.

    - 8-bit integers: the dtype's range.
    - Wider integers: the smallest n-bit range (n >= 8) holding every valid value —
      ``[0, 2**n - 1]`` unsigned, ``[-2**n, 2**n - 1]`` signed — so 12-bit data in uint16
      measures against 4095, not 65535, and a 16-bit sensor against 65535.
    - Floats: the observed range widened to hold ``[0, 1]``, so reflectance is measured
      against 1 and float data in 0..255 against its own span.
    """
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        if info.bits <= 8:
            return float(info.min), float(info.max)
        magnitude = max(int(maximum), -int(minimum) - 1, 0)
        bits = min(max(8, magnitude.bit_length()), info.bits - (info.min < 0))
        top = 2**bits - 1
        return (float(-top - 1) if info.min < 0 else 0.0), float(top)
    return min(0.0, minimum), max(1.0, maximum)


def value_stats(pixels: np.ndarray, valid: np.ndarray, nodata: float | None) -> ValueStats:
    """:class:`ValueStats` of ``pixels`` ``(bands, h, w)`` where ``valid`` ``(h, w)``."""
    if np.issubdtype(pixels.dtype, np.integer):
        return _integer_stats(pixels, valid, nodata)
    return _float_stats(pixels, valid)


_EMPTY = ValueStats(count=0, std=0.0, low=0.0, high=1.0, at_extremes=0)


def _valid_pixels(chip: Chip) -> np.ndarray:
    """``(h, w)`` True where the pixel has data: nodata means nodata in every band."""
    pixels, nodata = chip.pixels, chip.nodata
    floating = np.issubdtype(pixels.dtype, np.floating)
    if nodata is None or (floating and math.isnan(nodata)):
        if not floating:
            return np.ones((chip.height, chip.width), dtype=bool)
        return ~np.isnan(pixels).all(axis=0)
    missing = pixels == nodata
    if floating:
        missing |= np.isnan(pixels)
    return ~missing.all(axis=0)


def _integer_stats(pixels: np.ndarray, valid: np.ndarray, nodata: float | None) -> ValueStats:
    """Exact statistics by integer sums over the whole array, less the invalid pixels.

    An invalid pixel holds ``nodata`` in every band (that is what makes it invalid), so its
    share of every sum and count is known without selecting it.
    """
    invalid = (valid.size - int(np.count_nonzero(valid))) * pixels.shape[0]
    count = pixels.size - invalid
    if count == 0:
        return _EMPTY
    fill = int(nodata) if invalid and nodata is not None else 0
    info = np.iinfo(pixels.dtype)
    largest = max(-info.min, info.max)
    if info.bits <= 16:
        total = _exact_sum(pixels, largest, signed=info.min < 0) - invalid * fill
        # The square of an n-bit value fits 2n bits.
        square = np.dtype(f"{'i' if info.min < 0 else 'u'}{info.bits // 4}")
        squares = _exact_sum(np.square(pixels, dtype=square), largest**2, signed=False)
        squares -= invalid * fill**2
        # In integers n²·var = n·Σx² - (Σx)² holds exactly: no cancellation, and the value
        # recorded in the catalog is the same on every machine.
        std = math.sqrt(count * squares - total * total) / count
    else:
        values = pixels.astype(np.float64)
        if invalid:
            std = _moments(values, np.broadcast_to(valid, values.shape), count=count)[0]
        else:
            std = _moments(values, None, float(values.sum()))[0]
    minimum, maximum = info.min, info.max
    if info.bits > 8:  # only wider integers have a full scale that depends on the values
        minimum, maximum = int(pixels.min()), int(pixels.max())
        # An extreme equal to the nodata fill may belong to invalid pixels only.
        where = np.broadcast_to(valid, pixels.shape)
        if invalid and fill == maximum:
            maximum = int(pixels.max(where=where, initial=info.min))
        if invalid and fill == minimum and info.min < 0:  # unsigned scales start at 0
            minimum = int(pixels.min(where=where, initial=info.max))
    low, high = full_scale(pixels.dtype, minimum, maximum)
    at_extremes = np.count_nonzero(pixels == int(low)) + np.count_nonzero(pixels == int(high))
    if fill in (low, high):
        at_extremes -= invalid
    return ValueStats(count=count, std=std, low=low, high=high, at_extremes=int(at_extremes))


def _exact_sum(values: np.ndarray, largest: int, *, signed: bool) -> int:
    """The sum of ``values`` (none larger in magnitude than ``largest``), exactly.

    Summed in 32-bit accumulators over blocks too short to overflow them, which is about
    twice as fast as 64-bit accumulation; 64-bit where a block would be too short to pay.
    """
    flat = values.reshape(-1)
    block = (2**31 - 1 if signed else 2**32 - 1) // max(largest, 1)
    if block < 2**15:
        return int(flat.sum(dtype=np.int64 if signed else np.uint64))
    accumulator = np.int32 if signed else np.uint32
    return sum(
        int(flat[start : start + block].sum(dtype=accumulator))
        for start in range(0, flat.size, block)
    )


def _float_stats(pixels: np.ndarray, valid: np.ndarray) -> ValueStats:
    """Statistics of the finite values of valid pixels (NaN or inf in one band is skipped)."""
    values = pixels.astype(np.float64 if pixels.dtype.itemsize > 4 else np.float32, copy=False)
    if valid.all():
        total = float(values.sum())
        if math.isfinite(total):  # NaN and inf propagate into a sum
            std, minimum, maximum = _moments(values, None, total)
            low, high = full_scale(pixels.dtype, minimum, maximum)
            return ValueStats(count=values.size, std=std, low=low, high=high, at_extremes=0)
    where = np.isfinite(values)
    where &= valid
    count = int(np.count_nonzero(where))
    if count == 0:
        return _EMPTY
    std, minimum, maximum = _moments(values, where, count=count)
    low, high = full_scale(pixels.dtype, minimum, maximum)
    return ValueStats(count=count, std=std, low=low, high=high, at_extremes=0)


def _moments(
    values: np.ndarray, where: np.ndarray | None, total: float = 0.0, *, count: int = 0
) -> tuple[float, float, float]:
    """Standard deviation, minimum and maximum of float ``values``: all of them (``where`` is
    None, ``total`` their sum) or the ``count`` where ``where``.

    Two passes about the mean in the values' own precision, with no float64 copy of float32
    input. numpy sums pairwise, so a float32 sum here is good to about 1e-6 relative; the
    mean's own rounding shifts the variance by its square, far below any QC threshold.
    """
    kind = values.dtype.type
    if where is None:
        count = values.size
        deviations = values - kind(total / count)
    else:
        # Selecting the values would copy them; zeroing the rest keeps every reduction plain.
        outside = ~where
        deviations = values.copy()
        np.copyto(deviations, 0, where=outside)
        total = float(deviations.sum())
        deviations -= kind(total / count)
        # Zero lies between the smallest and largest deviation, so it moves neither extreme.
        np.copyto(deviations, 0, where=outside)
    mean = total / count
    minimum, maximum = mean + float(deviations.min()), mean + float(deviations.max())
    np.square(deviations, out=deviations)
    return math.sqrt(float(deviations.sum()) / count), minimum, maximum


def _nodata_fraction(valid: np.ndarray, rules: SampleRules) -> CheckResult:
    fraction = 1.0 - np.count_nonzero(valid) / valid.size if valid.size else 1.0
    return CheckResult(
        code="sample.nodata_fraction",
        passed=fraction <= rules.max_nodata_fraction,
        value=fraction,
        threshold=rules.max_nodata_fraction,
        message="" if fraction <= rules.max_nodata_fraction else "imagery does not cover the chip",
    )


def _blank(stats: ValueStats, rules: SampleRules) -> CheckResult:
    if stats.count == 0:
        return CheckResult(
            code="sample.blank", passed=False, threshold=rules.min_std, message="no valid pixels"
        )
    relative = stats.std / (stats.high - stats.low)
    return CheckResult(
        code="sample.blank",
        passed=relative >= rules.min_std,
        value=relative,
        threshold=rules.min_std,
        message="" if relative >= rules.min_std else "valid pixels are (nearly) uniform",
    )


def _saturated(stats: ValueStats, rules: SampleRules) -> CheckResult:
    fraction = stats.at_extremes / stats.count if stats.count else 0.0
    passed = fraction <= rules.max_saturated_fraction
    return CheckResult(
        code="sample.saturated",
        passed=passed,
        value=fraction,
        threshold=rules.max_saturated_fraction,
        message="" if passed else "too many values at the extremes of the full scale",
    )


def _mask_coverage(mask: np.ndarray, rules: SampleRules) -> CheckResult:
    unlabelled = np.count_nonzero(mask == BACKGROUND)
    if rules.ignore_index is not None and rules.ignore_index != BACKGROUND:
        unlabelled += np.count_nonzero(mask == rules.ignore_index)
    coverage = 1.0 - unlabelled / mask.size if mask.size else 0.0
    too_low = coverage < rules.min_mask_coverage
    too_high = coverage > rules.max_mask_coverage
    return CheckResult(
        code="sample.mask_coverage",
        passed=not (too_low or too_high),
        value=coverage,
        threshold=rules.min_mask_coverage if too_low else rules.max_mask_coverage,
        message="below minimum" if too_low else "above maximum" if too_high else "",
    )
