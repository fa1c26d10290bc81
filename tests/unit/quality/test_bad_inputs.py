"""The bad-input corpus: every annotation-level case gets exactly its own reason code, the
good events around them pass, and the imagery cases pass here to be judged downstream."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from labelflow.model import Taxonomy
from labelflow.quality.annotations import Code, ValidationRules, validate_raw

CORPUS = Path(__file__).parents[2] / "fixtures" / "bad_inputs" / "cases.json"
SPEC = json.loads(CORPUS.read_text())
TAXONOMY = Taxonomy()


def _build(case: dict[str, Any]) -> bytes:
    if "raw" in case:
        return case["raw"].encode()
    if "raw_hex" in case:
        return bytes.fromhex(case["raw_hex"].replace(" ", ""))
    event = {**SPEC["base"], **case.get("patch", {})}
    for key in case.get("remove", []):
        del event[key]
    generate = case.get("generate", {})
    if "pad_annotator_bytes" in generate:
        event["annotator"] = "x" * generate["pad_annotator_bytes"]
    if "circle_vertices" in generate:
        n = generate["circle_vertices"]
        ring = [
            [128 + 100 * math.cos(2 * math.pi * i / n), 128 + 100 * math.sin(2 * math.pi * i / n)]
            for i in range(n)
        ]
        event["features"] = [
            {"label": "water", "geometry": {"type": "Polygon", "coordinates": [[*ring, ring[0]]]}}
        ]
    if "feature_count" in generate:
        square = {"type": "Polygon", "coordinates": [[[1, 1], [5, 1], [5, 5], [1, 5], [1, 1]]]}
        event["features"] = [{"label": "tree", "geometry": square}] * generate["feature_count"]
    return json.dumps(event).encode()


def _codes(case: dict[str, Any]) -> list[str]:
    _, violations = validate_raw(
        _build(case), TAXONOMY, ValidationRules(), case.get("last_revision")
    )
    return [v.code for v in violations]


def _ids(cases: list[dict[str, Any]]) -> list[str]:
    return [c["name"] for c in cases]


VALIDATE = [c for c in SPEC["bad"] if c["stage"] == "validate"]
MATERIALIZE = [c for c in SPEC["bad"] if c["stage"] == "materialize"]


def test_corpus_is_large_distinct_and_uses_known_codes() -> None:
    names = _ids(SPEC["bad"])
    assert len(names) >= 30
    assert len(set(names)) == len(names)
    assert {c["code"] for c in VALIDATE} <= {str(code) for code in Code}
    assert {c["code"] for c in MATERIALIZE} == {
        "imagery.missing",
        "imagery.corrupt",
        "imagery.crs_invalid",
    }


@pytest.mark.parametrize("case", VALIDATE, ids=_ids(VALIDATE))
def test_bad_input_yields_exactly_its_code(case: dict[str, Any]) -> None:
    assert _codes(case) == [case["code"]]


@pytest.mark.parametrize("case", SPEC["good"], ids=_ids(SPEC["good"]))
def test_good_input_passes(case: dict[str, Any]) -> None:
    assert _codes(case) == []


@pytest.mark.parametrize("case", MATERIALIZE, ids=_ids(MATERIALIZE))
def test_imagery_cases_pass_annotation_rules(case: dict[str, Any]) -> None:
    """The annotation is fine; only reading the image can reject it (in materialize)."""
    assert _codes(case) == []
