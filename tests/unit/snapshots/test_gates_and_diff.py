"""Quality gates and manifest diffs as pure functions."""

from __future__ import annotations

import pyarrow as pa
import pytest

from labelflow.snapshots.diff import diff, summary
from labelflow.snapshots.gates import evaluate, total_variation
from labelflow.snapshots.manifest import ClassStats, Stats
from labelflow.snapshots.settings import GateRules


def _stats(pixels: dict[str, int], samples: dict[str, int], failed: int = 0) -> Stats:
    total = sum(pixels.values())
    return Stats(
        samples=max(samples.values(), default=0),
        splits={"train": 1},
        pixels=total * 2,
        labelled_pixels=total,
        classes={
            n: ClassStats(samples=samples[n], pixels=p, share=p / total if total else 0)
            for n, p in pixels.items()
        },
        failed_members=failed,
        code_versions={},
    )


def test_total_variation_is_half_the_l1_distance() -> None:
    assert total_variation({"a": 1.0}, {"b": 1.0}) == 1.0
    assert total_variation({"a": 0.5, "b": 0.5}, {"a": 0.5, "b": 0.5}) == 0.0
    assert total_variation({"a": 0.75, "b": 0.25}, {"a": 0.25, "b": 0.75}) == pytest.approx(0.5)


def test_gates_pass_fail_and_say_what_they_did_not_measure() -> None:
    rules = GateRules(min_samples_per_class=2, max_class_shift=0.2, max_failed_members=0)
    parent = _stats({"a": 50, "b": 50}, {"a": 5, "b": 5})
    ok = _stats({"a": 55, "b": 45}, {"a": 6, "b": 6})
    assert {g.code: g.status for g in evaluate(ok, parent, ["a", "b"], rules)} == {
        "gate.min_samples_per_class": "passed",
        "gate.class_shift": "passed",
        "gate.failed_members": "passed",
        "gate.quarantine_share": "not_measured",
    }
    bad = _stats({"a": 90, "b": 10}, {"a": 9, "b": 1}, failed=3)
    results = {g.code: g for g in evaluate(bad, parent, ["a", "b", "c"], rules)}
    assert results["gate.min_samples_per_class"].failed
    assert "b (1 samples)" in results["gate.min_samples_per_class"].message
    assert "c (0 samples)" in results["gate.min_samples_per_class"].message
    assert results["gate.class_shift"].failed
    assert results["gate.class_shift"].value == pytest.approx(0.4)
    assert results["gate.failed_members"].failed and results["gate.failed_members"].value == 3
    orphan = {g.code: g.status for g in evaluate(ok, None, ["a", "b"], rules)}
    assert orphan["gate.class_shift"] == "not_measured"


def _manifest(rows: list[tuple[str, int, str]]) -> pa.Table:
    return pa.table(
        {
            "sample_id": [r[0] for r in rows],
            "revision": [r[1] for r in rows],
            "image_hash": [r[2] for r in rows],
            "mask_hash": ["m"] * len(rows),
            "split": ["train"] * len(rows),
        }
    )


def test_diff_finds_added_removed_and_changed_but_not_unchanged() -> None:
    old = _manifest([("a", 1, "x"), ("b", 1, "x"), ("c", 1, "x"), ("d", 2, "x")])
    new = _manifest([("a", 1, "x"), ("c", 2, "y"), ("d", 2, "z"), ("e", 1, "x")])
    changes = diff(old, new)
    assert [(r["sample_id"], r["change"]) for r in changes.to_pylist()] == [
        ("b", "removed"),
        ("c", "changed"),
        ("d", "changed"),
        ("e", "added"),
    ]
    assert summary(changes) == {"added": 1, "removed": 1, "changed": 2}
    assert diff(new, new).num_rows == 0
