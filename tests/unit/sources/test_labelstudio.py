"""Label Studio export and webhook parsing, from fixtures in Label Studio's own shapes."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from shapely.geometry import shape

from labelflow.model import CoordSpace, Status, Taxonomy
from labelflow.quality.annotations import validate_event
from labelflow.sources.base import SourceFormatError, revision_of
from labelflow.sources.labelstudio import (
    LabelStudioOptions,
    deleted_event,
    parse_export,
    parse_webhook,
    task_to_event,
)

FIXTURES = Path(__file__).parents[2] / "fixtures" / "labelstudio"


def _load(name: str) -> object:
    return json.loads((FIXTURES / name).read_text())


def _by_key(events: list) -> dict:
    return {e.task_id: e for e in events}


def test_export_maps_percent_regions_to_pixels_and_keeps_geo_fields() -> None:
    events = _by_key(parse_export(_load("export.json")))
    event = events["3f1c2b7e-5b8a-4c55-9a51-0d6f1c6a9e01"]
    assert event.source == "labelstudio"
    assert event.status == Status.SUBMITTED
    assert event.coordinates == CoordSpace.PIXEL
    assert event.annotator == "3"
    assert [f.label for f in event.features] == ["building", "tree"]  # "choices" is no region
    building = shape(event.features[0].geometry)
    assert building.bounds == (100.0, 50.0, 300.0, 200.0)  # 10-30% of 1000, 10-40% of 500
    image = event.image
    assert (image.uri, image.width, image.height) == ("/data/upload/7/scene-a.tif", 1000, 500)
    assert image.scene_id == "scene-a"
    assert image.bounds == (500000.0, 4100000.0, 500100.0, 4100050.0)
    assert image.bounds_crs == "EPSG:32631"
    assert validate_event(event, Taxonomy()) == []


def test_rectangle_rotates_clockwise_about_its_top_left_corner() -> None:
    event = _by_key(parse_export(_load("export.json")))["3f1c2b7e-5b8a-4c55-9a51-0d6f1c6a9e01"]
    ring = event.features[1].geometry["coordinates"][0]
    # 100 px wide, 100 px high at (500, 250), turned 90°: the width now points down (+y).
    expected = [(500, 250), (500, 350), (400, 350), (400, 250), (500, 250)]
    assert [tuple(round(c, 6) for c in p) for p in ring] == expected


def test_revision_is_the_latest_update_time_of_task_or_annotation() -> None:
    event = _by_key(parse_export(_load("export.json")))["3f1c2b7e-5b8a-4c55-9a51-0d6f1c6a9e01"]
    assert event.revision == revision_of(datetime(2025, 3, 1, 10, 15, 30, 250000, tzinfo=UTC))


def test_task_without_own_id_is_keyed_by_project_and_task_id() -> None:
    keys = [e.task_id for e in parse_export(_load("export.json"))]
    assert keys[1:] == ["7:102", "7:103", "7:104"]
    options = LabelStudioOptions(id_key="not-there")
    assert parse_export(_load("export.json"), options)[0].task_id == "7:101"


def test_skips_deletions_and_older_submissions() -> None:
    events = _by_key(parse_export(_load("export.json")))
    assert events["7:102"].status == Status.SKIPPED
    assert events["7:102"].features == []
    # The newest annotation of 103 is a skip, but an older one was submitted: that one counts.
    assert events["7:103"].status == Status.SUBMITTED
    assert [f.label for f in events["7:103"].features] == ["water"]
    assert events["7:103"].annotator == "3"
    assert events["7:104"].status == Status.DELETED
    assert events["7:104"].revision == revision_of(datetime(2025, 3, 4, 7, 30, tzinfo=UTC))


def test_same_export_yields_identical_events() -> None:
    first, second = parse_export(_load("export.json")), parse_export(_load("export.json"))
    assert first == second
    assert [e.event_id for e in first] == [e.event_id for e in second]


def test_a_later_save_has_a_higher_revision() -> None:
    [task] = [t for t in _load("export.json") if t["id"] == 103]
    before = task_to_event(task)
    task["updated_at"] = "2025-03-05T00:00:00Z"
    assert task_to_event(task).revision > before.revision


def test_unreadable_task_is_a_source_format_error() -> None:
    with pytest.raises(SourceFormatError) as err:
        task_to_event(
            {
                "id": 5,
                "project": 1,
                "annotations": [
                    {
                        "id": 1,
                        "result": [
                            {
                                "type": "polygonlabels",
                                "value": {"points": [[1, 1]], "polygonlabels": ["x"]},
                            }
                        ],
                    }
                ],
            }
        )
    assert err.value.code == "labelstudio.invalid_task"
    with pytest.raises(SourceFormatError):
        parse_export({"tasks": []})  # type: ignore[arg-type]


def test_vanished_task_becomes_a_deletion_at_its_revision() -> None:
    when = datetime(2025, 4, 1, tzinfo=UTC)
    event = deleted_event("7:104", revision_of(when), when)
    assert (event.task_id, event.status, event.revision, event.features) == (
        "7:104",
        Status.DELETED,
        revision_of(when),
        [],
    )


@pytest.mark.parametrize(
    ("fixture", "action", "task_ids", "annotation_ids"),
    [
        ("webhook_annotation_created.json", "ANNOTATION_CREATED", (101,), ()),
        ("webhook_annotation_updated.json", "ANNOTATION_UPDATED", (101,), ()),
        ("webhook_annotations_deleted.json", "ANNOTATIONS_DELETED", (), (501, 503)),
        ("webhook_tasks_deleted.json", "TASKS_DELETED", (102, 104), ()),
    ],
)
def test_webhook_becomes_a_task_changed_hint(
    fixture: str, action: str, task_ids: tuple, annotation_ids: tuple
) -> None:
    hint = parse_webhook(_load(fixture))
    assert hint is not None
    assert (hint.project, hint.action, hint.task_ids, hint.annotation_ids) == (
        7,
        action,
        task_ids,
        annotation_ids,
    )


def test_webhook_that_changes_no_label_is_ignored() -> None:
    assert parse_webhook(_load("webhook_project_updated.json")) is None


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ([], "webhook.invalid"),
        ({"project": {"id": 7}}, "webhook.invalid"),
        ({"action": "SOMETHING_NEW", "project": {"id": 7}}, "webhook.unknown_action"),
        ({"action": "TASKS_DELETED", "project": {"id": 7}}, "webhook.invalid"),
        ({"action": "TASKS_DELETED", "tasks": [{"id": 1}]}, "webhook.invalid"),
        ({"action": "ANNOTATION_CREATED", "project": {"id": 7}, "task": {}}, "webhook.invalid"),
    ],
)
def test_malformed_webhook_is_a_source_format_error(body: object, code: str) -> None:
    with pytest.raises(SourceFormatError) as err:
        parse_webhook(body)
    assert err.value.code == code
