"""The bad-input corpus: every annotation-level case gets exactly its own reason code, the
good events around them pass, and the imagery cases pass here to be judged downstream."""

from __future__ import annotations

from typing import Any

import pytest

from bad_inputs import MATERIALIZE, SPEC, VALIDATE, build
from labelflow.model import Taxonomy
from labelflow.quality.annotations import Code, ValidationRules, validate_raw

TAXONOMY = Taxonomy()


def _codes(case: dict[str, Any]) -> list[str]:
    _, violations = validate_raw(
        build(case), TAXONOMY, ValidationRules(), case.get("last_revision")
    )
    return [v.code for v in violations]


def _ids(cases: list[dict[str, Any]]) -> list[str]:
    return [c["name"] for c in cases]


def test_corpus_is_large_distinct_and_uses_known_codes() -> None:
    names = _ids(SPEC["bad"])
    assert len(names) >= 30
    assert len(set(names)) == len(names)
    assert {c["code"] for c in VALIDATE} <= {str(code) for code in Code}
    assert {c["code"] for c in MATERIALIZE} == {
        "imagery.missing",
        "imagery.corrupt",
        "imagery.unsupported",
        "imagery.unreachable",
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
