"""GeoJSON, COCO and format detection, through the file entry point where it matters."""

from __future__ import annotations

import json
import os
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest
from shapely.geometry import shape

from labelflow.model import AnnotationEvent, CoordSpace, Status, Taxonomy
from labelflow.quality.annotations import validate_event
from labelflow.sources.base import Refused, SourceFormatError, revision_of
from labelflow.sources.coco import parse_coco
from labelflow.sources.files import FileOptions, detect_format, read_events
from labelflow.sources.geojson import GeoJSONOptions, parse_geojson

FIXTURES = Path(__file__).parents[2] / "fixtures"
WHEN = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


def _doc(name: str) -> dict:
    return json.loads((FIXTURES / "files" / name).read_text())


def test_geojson_groups_features_into_tasks_with_their_image_and_crs() -> None:
    events = parse_geojson(_doc("campaign.geojson"), WHEN)
    assert [e.task_id for e in events] == ["paris-001", "paris-002"]
    first, second = events
    assert [f.label for f in first.features] == ["building", "road"]
    assert [f.feature_id for f in first.features] == ["f1", "f3"]
    assert first.revision == 4  # the highest explicit revision of the task's features
    assert second.revision == revision_of(WHEN)  # none given: the file's time
    assert second.status == Status.APPROVED
    assert first.coordinates == CoordSpace.GEO
    assert first.crs == "urn:ogc:def:crs:EPSG::32631"
    assert first.image.uri == "scenes/paris-001.tif"
    assert validate_event(first, Taxonomy()) == []


def test_geojson_collection_level_image_and_custom_class_property() -> None:
    [event] = parse_geojson(_doc("scene.geojson"), WHEN, GeoJSONOptions(class_property="kind"))
    assert event.task_id == "s3://imagery/lyon/tile-17.tif"
    assert event.image.scene_id == "lyon-17"
    assert event.crs == "EPSG:4326"
    assert [f.label for f in event.features] == ["water"]
    assert validate_event(event, Taxonomy()) == []


@pytest.mark.parametrize(
    ("doc", "code"),
    [
        ({"type": "Feature"}, "geojson.invalid"),
        ({"type": "FeatureCollection", "crs": 4326, "features": []}, "geojson.invalid_crs"),
    ],
)
def test_geojson_that_is_no_collection_is_refused_whole(doc: dict, code: str) -> None:
    with pytest.raises(SourceFormatError) as err:
        parse_geojson(doc, WHEN)
    assert err.value.code == code


@pytest.mark.parametrize(
    ("feature", "code"),
    [
        ({"type": "Feature", "properties": {"class": "tree"}}, "geojson.no_task"),
        ({"type": "Feature", "properties": {"image": "b.tif"}}, "geojson.missing_class"),
        (
            {
                "type": "Feature",
                "properties": {"image": "b.tif", "class": "tree", "status": "finished"},
                "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 0]]]},
            },
            "geojson.status_invalid",
        ),
    ],
)
def test_a_bad_geojson_task_is_refused_and_the_others_flow(feature: dict, code: str) -> None:
    good = {
        "type": "Feature",
        "properties": {"image": "a.tif", "class": "tree"},
        "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 0]]]},
    }
    doc = {"type": "FeatureCollection", "features": [good, feature, good]}
    first, refused = parse_geojson(doc, WHEN)
    assert isinstance(first, AnnotationEvent) and len(first.features) == 2
    assert isinstance(refused, Refused)
    assert refused.code == code
    assert refused.index == 1
    assert "feature #1" in refused.message


def test_coco_images_become_tasks_with_pixel_polygons() -> None:
    events = parse_coco(_doc("dataset.coco.json"), WHEN, images_root="s3://bucket/set/")
    assert [e.task_id for e in events] == ["coco:tiles/a.tif", "coco:tiles/b.tif"]
    a, b = events
    assert a.image.uri == "s3://bucket/set/tiles/a.tif"
    assert (a.image.width, a.image.height) == (512, 512)
    assert [f.label for f in a.features] == ["building", "building", "road"]
    assert a.features[0].geometry["coordinates"][0][-1] == [10.0, 10.0]  # ring closed
    assert a.features[1].geometry["type"] == "MultiPolygon"  # two pieces of one object
    assert shape(a.features[2].geometry).bounds == (0.0, 300.0, 512.0, 312.0)  # from bbox
    assert b.features == []  # an image without objects is all background
    assert validate_event(a, Taxonomy()) == []


@pytest.mark.parametrize(
    ("segmentation", "code"),
    [
        ({"counts": [0, 5, 10], "size": [512, 512]}, "coco.rle_unsupported"),
        ([[1, 2, 3]], "coco.invalid_segmentation"),
    ],
)
def test_coco_unreadable_segmentation_refuses_its_image(segmentation: object, code: str) -> None:
    doc = _doc("dataset.coco.json")
    doc["annotations"][0]["segmentation"] = segmentation
    refused, other = parse_coco(doc, WHEN)
    assert isinstance(refused, Refused) and isinstance(other, AnnotationEvent)
    assert refused.code == code
    assert "annotation 100" in refused.message
    assert "tiles/a.tif" in refused.message


def test_coco_undefined_category_refuses_its_image() -> None:
    doc = _doc("dataset.coco.json")
    doc["annotations"][0]["category_id"] = 99
    refused, _other = parse_coco(doc, WHEN)
    assert isinstance(refused, Refused)
    assert refused.code == "coco.unknown_category"


@pytest.mark.parametrize(
    ("path", "fmt"),
    [
        ("files/campaign.geojson", "geojson"),
        ("files/dataset.coco.json", "coco"),
        ("labelstudio/export.json", "labelstudio"),
    ],
)
def test_format_is_detected_from_the_content(path: str, fmt: str) -> None:
    assert detect_format(json.loads((FIXTURES / path).read_text())) == fmt


@pytest.mark.parametrize(
    "path", ["files/campaign.geojson", "files/dataset.coco.json", "labelstudio/export.json"]
)
def test_reingesting_an_unchanged_file_yields_identical_events(path: str, tmp_path: Path) -> None:
    copy = tmp_path / "drop.json"
    shutil.copy(FIXTURES / path, copy)
    first, again = read_events(copy), read_events(copy)
    assert first and first == again
    assert [e.event_id for e in first] == [e.event_id for e in again]


def test_a_touched_file_gets_a_newer_revision(tmp_path: Path) -> None:
    copy = tmp_path / "drop.json"
    shutil.copy(FIXTURES / "files" / "dataset.coco.json", copy)
    os.utime(copy, ns=(1_700_000_000_000_000_000, 1_700_000_000_000_000_000))
    before = read_events(copy)
    os.utime(copy, ns=(1_700_000_001_000_000_000, 1_700_000_001_000_000_000))
    after = read_events(copy)
    assert before[0].revision == 1_700_000_000_000_000
    assert after[0].revision == before[0].revision + 1_000_000
    assert after[0].image.uri == f"{tmp_path}/tiles/a.tif"  # relative to the file's folder


@pytest.mark.parametrize(
    ("content", "code"),
    [
        (b'{"type": "FeatureCollection",', "format.malformed_json"),
        (b'{"hello": "world"}', "format.unknown"),
        (b'[{"id": 1}]', "format.unknown"),
        (b"\xff\xfe not text", "file.encoding"),
        (b"", "file.empty"),
    ],
)
def test_bad_files_raise_a_coded_error_naming_the_file(
    content: bytes, code: str, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.json"
    bad.write_bytes(content)
    with pytest.raises(SourceFormatError) as err:
        read_events(bad)
    assert err.value.code == code
    assert str(bad) in str(err.value)


def test_missing_and_oversized_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(SourceFormatError) as err:
        read_events(tmp_path / "absent.json")
    assert err.value.code == "file.unreadable"
    big = tmp_path / "big.json"
    big.write_text("[]" + " " * 100)
    with pytest.raises(SourceFormatError) as err:
        read_events(big, FileOptions(max_file_bytes=50))
    assert err.value.code == "file.too_large"
