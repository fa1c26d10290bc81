"""The bad-file corpus: every case gets exactly its own outcome, and a bad unit never costs
the file's other units."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from bad_files import CASES, UNITS, build
from labelflow.model import AnnotationEvent, Status, Taxonomy
from labelflow.quality.annotations import ValidationRules, validate_event
from labelflow.sources.base import Refused, SourceFormatError
from labelflow.sources.files import read_file
from labelflow.sources.ingest import encoded

RULES = ValidationRules()


def _ids(cases: list[dict[str, Any]]) -> list[str]:
    return [c["name"] for c in cases]


def _outcome(case: dict[str, Any], tmp_path: Path) -> list[AnnotationEvent | Refused]:
    """What ingest makes of the case's file: an event or a refusal per unit."""
    path = tmp_path / "drop.json"
    path.write_bytes(build(case))
    out: list[AnnotationEvent | Refused] = []
    for item in encoded(read_file(path), RULES.max_payload_bytes):
        out.append(item if isinstance(item, Refused) else item[0])
    return out


def test_corpus_is_large_and_every_case_names_its_outcome() -> None:
    names = _ids(CASES)
    assert len(names) >= 60
    assert len(set(names)) == len(names)
    assert {c["where"] for c in CASES} == {"file", "ingest", "validate", "good"}
    assert all(c["code"] for c in CASES)
    assert all(c["where"] == "ingest" for c in CASES if "events" in c)


FILE = [c for c in CASES if c["where"] == "file"]
INGEST = [c for c in CASES if c["where"] == "ingest"]
VALIDATE = [c for c in CASES if c["where"] == "validate"]
GOOD = [c for c in CASES if c["where"] == "good"]


@pytest.mark.parametrize("case", FILE, ids=_ids(FILE))
def test_a_file_that_is_no_export_is_refused_whole(case: dict[str, Any], tmp_path: Path) -> None:
    with pytest.raises(SourceFormatError) as err:
        _outcome(case, tmp_path)
    assert err.value.code == case["code"]
    assert "drop.json" in err.value.message


@pytest.mark.parametrize("case", INGEST, ids=_ids(INGEST))
def test_a_bad_unit_is_refused_with_its_code_and_the_others_flow(
    case: dict[str, Any], tmp_path: Path
) -> None:
    items = _outcome(case, tmp_path)
    refused = [i for i in items if isinstance(i, Refused)]
    events = [i for i in items if isinstance(i, AnnotationEvent)]
    assert [r.code for r in refused] == [case["code"]], [r.message for r in refused]
    assert len(events) == case.get("events", UNITS - 1)
    assert all(validate_event(e, Taxonomy(), RULES) == [] for e in events)
    [why] = refused
    assert why.excerpt and len(why.excerpt) <= 2000
    assert len(why.message) < 400
    assert "#" in why.message or "task" in why.message  # names the unit


@pytest.mark.parametrize("case", VALIDATE, ids=_ids(VALIDATE))
def test_a_unit_that_becomes_an_event_is_judged_by_validate(
    case: dict[str, Any], tmp_path: Path
) -> None:
    items = _outcome(case, tmp_path)
    assert all(isinstance(i, AnnotationEvent) for i in items), items
    assert len(items) == UNITS
    codes = [[r.code for r in validate_event(e, Taxonomy(), RULES)] for e in items]  # type: ignore[arg-type]
    assert sorted(codes) == [[], [], [case["code"]]]


@pytest.mark.parametrize("case", GOOD, ids=_ids(GOOD))
def test_good_files_and_units_pass(case: dict[str, Any], tmp_path: Path) -> None:
    items = _outcome(case, tmp_path)
    events = [i for i in items if isinstance(i, AnnotationEvent)]
    assert events == items, items
    assert all(validate_event(e, Taxonomy(), RULES) == [] for e in events)
    statuses = Counter(e.status for e in events)
    assert statuses[Status(case["code"])] >= 1


def test_a_malformed_field_never_deletes_a_sample(tmp_path: Path) -> None:
    """Only an explicit empty annotation list (or a status) removes a sample."""
    for case in INGEST + VALIDATE:
        for item in _outcome(case, tmp_path):
            if isinstance(item, AnnotationEvent):
                assert not item.removes_sample, (case["name"], item.status)


def test_refusing_the_same_task_twice_gives_the_same_fingerprint(tmp_path: Path) -> None:
    case = next(c for c in INGEST if c["name"] == "labelstudio.empty_label_list")
    first = [i for i in _outcome(case, tmp_path) if isinstance(i, Refused)]
    again = [i for i in _outcome(case, tmp_path) if isinstance(i, Refused)]
    assert [r.fingerprint for r in first] == [r.fingerprint for r in again]
    other = next(c for c in INGEST if c["name"] == "labelstudio.label_is_a_string")
    assert [i.fingerprint for i in _outcome(other, tmp_path) if isinstance(i, Refused)] != [
        r.fingerprint for r in first
    ]
