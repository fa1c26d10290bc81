"""Annotation rules beyond the corpus: messages, feature indices, configurable bounds."""

from __future__ import annotations

from labelflow.model import AnnotationEvent, Feature, ImageRef, Reason, Status, Taxonomy
from labelflow.quality.annotations import (
    Code,
    ValidationRules,
    parse_raw,
    validate_event,
)

SQUARE = {"type": "Polygon", "coordinates": [[[10, 10], [30, 10], [30, 30], [10, 30], [10, 10]]]}
BOW_TIE = {"type": "Polygon", "coordinates": [[[10, 10], [50, 50], [50, 10], [10, 50], [10, 10]]]}


def _event(*geometries: dict, revision: int = 3, label: str = "building") -> AnnotationEvent:
    return AnnotationEvent(
        source="test",
        task_id="t-1",
        revision=revision,
        status=Status.SUBMITTED,
        features=[Feature(label=label, geometry=g) for g in geometries],
        image=ImageRef(provider="synthetic", uri="synthetic://t-1", width=64, height=64),
    )


def test_each_broken_feature_is_reported_once_with_its_index() -> None:
    violations = validate_event(_event(SQUARE, BOW_TIE, SQUARE, BOW_TIE), Taxonomy())
    assert [(v.code, v.feature) for v in violations] == [
        (Code.GEOMETRY_SELF_INTERSECTION, 1),
        (Code.GEOMETRY_SELF_INTERSECTION, 3),
    ]
    assert violations[0].message.startswith("Self-intersection[30 30]")


def test_bounds_come_from_the_rules() -> None:
    assert validate_event(_event(SQUARE), Taxonomy()) == []
    strict = ValidationRules(min_area_px=500.0)
    [violation] = validate_event(_event(SQUARE), Taxonomy(), strict)
    assert violation.code == "geometry.too_small"
    assert "400" in violation.message
    few = ValidationRules(max_vertices=4)
    assert validate_event(_event(SQUARE), Taxonomy(), few) == []
    pentagon = {
        "type": "Polygon",
        "coordinates": [[[0, 0], [9, 0], [9, 9], [5, 12], [0, 9], [0, 0]]],
    }
    assert [v.code for v in validate_event(_event(pentagon), Taxonomy(), few)] == [
        "geometry.too_many_vertices"
    ]


def test_taxonomy_decides_known_classes() -> None:
    taxonomy = Taxonomy(classes={"solar_panel": 1})
    assert validate_event(_event(SQUARE, label="solar_panel"), taxonomy) == []
    assert [v.code for v in validate_event(_event(SQUARE), taxonomy)] == ["class.unknown"]


def test_only_an_older_revision_is_stale() -> None:
    taxonomy = Taxonomy()
    assert validate_event(_event(SQUARE, revision=3), taxonomy, last_revision=3) == []
    assert validate_event(_event(SQUARE, revision=4), taxonomy, last_revision=3) == []
    [stale] = validate_event(_event(SQUARE, revision=2), taxonomy, last_revision=3)
    assert stale.code == "revision.stale"


def test_event_payload_bound_applies_to_constructed_events() -> None:
    rules = ValidationRules(max_payload_bytes=200)
    assert [v.code for v in validate_event(_event(SQUARE), Taxonomy(), rules)] == [
        "payload.too_large"
    ]


def test_parse_raw_round_trips_a_valid_event() -> None:
    event = _event(SQUARE)
    parsed = parse_raw(event.model_dump_json().encode())
    assert parsed == event
    assert parsed.event_id == event.event_id


def test_parse_raw_reports_every_pydantic_error_with_its_field() -> None:
    result = parse_raw(b'{"source": "s", "task_id": "t", "revision": -2, "status": "lost"}')
    assert isinstance(result, list)
    assert all(isinstance(v, Reason) for v in result)
    assert {(v.code, v.message.split(":")[0]) for v in result} == {
        ("schema.out_of_range", "revision"),
        ("schema.unknown_value", "status"),
    }


def test_oversized_bytes_are_refused_before_parsing() -> None:
    rules = ValidationRules(max_payload_bytes=10)
    [violation] = parse_raw(b"x" * 11, rules)  # not JSON either: size wins, nothing parsed
    assert violation.code == "payload.too_large"
    assert "11 bytes" in violation.message


def test_codes_are_stable() -> None:
    """Quarantine dashboards and replays group by these strings: renaming one is a break."""
    assert {str(c) for c in Code} >= {
        "schema.malformed_json",
        "schema.missing_field",
        "schema.wrong_type",
        "geometry.invalid",
        "geometry.self_intersection",
        "geometry.empty",
        "geometry.out_of_image",
        "geometry.too_small",
        "geometry.too_large",
        "geometry.too_many_vertices",
        "geometry.unsupported_type",
        "class.unknown",
        "image.missing_reference",
        "revision.stale",
        "payload.too_large",
    }


def test_lonlat_labels_are_not_compared_with_bounds_in_the_image_crs() -> None:
    """Bounds without a CRS are in the image's own (here UTM metres): lon/lat labels inside
    the scene must not be refused as outside them; the same bounds in EPSG:4326 still count."""
    lonlat = {
        "type": "Polygon",
        "coordinates": [
            [[-77.6, 24.1], [-77.59, 24.1], [-77.59, 24.11], [-77.6, 24.11], [-77.6, 24.1]]
        ],
    }

    def event(bounds_crs: str | None) -> AnnotationEvent:
        return AnnotationEvent(
            source="test",
            task_id="t-utm",
            revision=1,
            status=Status.SUBMITTED,
            coordinates="geo",
            crs="EPSG:4326",
            features=[Feature(label="water", geometry=lonlat)],
            image=ImageRef(
                uri="/data/utm.tif", bounds=(300000.0, 2660000.0, 310000.0, 2670000.0),
                bounds_crs=bounds_crs,
            ),
        )  # fmt: skip

    assert validate_event(event(None), Taxonomy()) == []
    [violation] = validate_event(event("EPSG:4326"), Taxonomy())
    assert violation.code == Code.GEOMETRY_OUT_OF_IMAGE
