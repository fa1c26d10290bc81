"""The quality gates a snapshot passes before it is published.

Each gate is a :class:`GateResult` with a stable code, the measured value, the threshold and a
message, so a refusal says exactly why. A gate that cannot be measured says so
(``status="not_measured"``) instead of passing silently:

- ``gate.min_samples_per_class``: every taxonomy class is in at least N members; a class
  that vanished from the data would otherwise vanish from the model without a word.
- ``gate.class_shift``: the total-variation distance between the class pixel distributions
  of the snapshot and its parent; a jump usually means a mislabelled batch or a taxonomy
  change, which a continual learner would follow blindly. Not measured without a parent.
- ``gate.failed_members``: members whose recorded checks failed (materialize quarantines
  those, so a failure here means rows written by hand or by older rules).
- ``gate.quarantine_share``: not measured: the quarantine topic has no per-window count the
  catalog could read cheaply; see ``labelflow quarantine list``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

from labelflow.snapshots.manifest import Stats
from labelflow.snapshots.settings import GateRules


class GateResult(BaseModel):
    code: str
    status: Literal["passed", "failed", "not_measured"]
    value: float | None = None
    threshold: float | None = None
    message: str

    @property
    def failed(self) -> bool:
        return self.status == "failed"


def evaluate(
    current: Stats, parent: Stats | None, classes: list[str], rules: GateRules
) -> list[GateResult]:
    """Every gate on ``current`` (and ``parent``, the snapshot it follows, if any)."""
    return [
        _min_samples_per_class(current, classes, rules.min_samples_per_class),
        _class_shift(current, parent, rules.max_class_shift),
        _failed_members(current, rules.max_failed_members),
        GateResult(
            code="gate.quarantine_share",
            status="not_measured",
            message="the share of quarantined records is not recorded in the catalog",
        ),
    ]


def class_distribution(stats: Stats) -> dict[str, float]:
    return {name: c.share for name, c in stats.classes.items()}


def total_variation(a: dict[str, float], b: dict[str, float]) -> float:
    """Half the L1 distance between two distributions over class names: 0 same, 1 disjoint."""
    return 0.5 * sum(abs(a.get(k, 0.0) - b.get(k, 0.0)) for k in set(a) | set(b))


def _min_samples_per_class(stats: Stats, classes: list[str], minimum: int) -> GateResult:
    present = {n: stats.classes[n].samples if n in stats.classes else 0 for n in classes}
    short = {name: n for name, n in present.items() if n < minimum}
    return GateResult(
        code="gate.min_samples_per_class",
        status="failed" if short else "passed",
        value=float(min(present.values(), default=0)),
        threshold=float(minimum),
        message=(
            "classes below the minimum: "
            + ", ".join(f"{name} ({n} samples)" for name, n in sorted(short.items()))
            if short
            else f"every class is in at least {minimum} samples"
        ),
    )


def _class_shift(stats: Stats, parent: Stats | None, maximum: float) -> GateResult:
    if parent is None:
        return GateResult(
            code="gate.class_shift",
            status="not_measured",
            threshold=maximum,
            message="no parent snapshot to compare with",
        )
    if not stats.labelled_pixels or not parent.labelled_pixels:
        return GateResult(
            code="gate.class_shift",
            status="not_measured",
            threshold=maximum,
            message="no labelled pixels in the snapshot or its parent",
        )
    distance = total_variation(class_distribution(stats), class_distribution(parent))
    return GateResult(
        code="gate.class_shift",
        status="failed" if distance > maximum else "passed",
        value=round(distance, 6),
        threshold=maximum,
        message=f"class pixel distribution moved {distance:.3f} (total variation) from the parent",
    )


def _failed_members(stats: Stats, maximum: int) -> GateResult:
    return GateResult(
        code="gate.failed_members",
        status="failed" if stats.failed_members > maximum else "passed",
        value=float(stats.failed_members),
        threshold=float(maximum),
        message=f"{stats.failed_members} member(s) failed their recorded checks",
    )
