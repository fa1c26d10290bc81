"""A Label Studio task as the API returns it → one canonical event: which annotation counts,
every region type, where the image comes from."""

from __future__ import annotations

import base64
from typing import Any

import numpy as np
import pytest
from shapely.geometry import shape

from labelflow.model import Status, Taxonomy
from labelflow.quality.annotations import validate_event
from labelflow.sources.base import SourceFormatError
from labelflow.sources.labelstudio import LabelStudioOptions, choose_annotation, task_to_event
from labelstudio_support import encode_brush

W, H = 200, 100


def _polygon(label: str = "building", points: Any = None, **extra: Any) -> dict[str, Any]:
    return {
        "id": "p",
        "type": "polygonlabels",
        "from_name": "poly",
        "to_name": "image",
        "original_width": W,
        "original_height": H,
        "image_rotation": 0,
        "value": {"points": points or [[10, 10], [50, 10], [50, 60]], "polygonlabels": [label]},
        **extra,
    }


def _annotation(aid: int, updated: str, result: list, **extra: Any) -> dict[str, Any]:
    return {"id": aid, "updated_at": updated, "created_at": updated, "result": result, **extra}


def _task(*annotations: dict[str, Any], data: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "id": 42,
        "project": 3,
        "updated_at": "2026-01-01T00:00:00Z",
        "data": data or {"image": "/data/local-files/?d=chips/a.png"},
        "annotations": list(annotations),
    }


# --- which annotation counts -------------------------------------------------------------


def test_latest_submitted_annotation_counts_and_skips_never_win() -> None:
    old = _annotation(1, "2026-01-01T10:00:00Z", [_polygon("road")])
    new = _annotation(2, "2026-01-01T11:00:00Z", [_polygon("building")])
    skip = _annotation(3, "2026-01-01T12:00:00Z", [], was_cancelled=True)
    event = task_to_event(_task(old, new, skip))
    assert event.status == Status.SUBMITTED
    assert [f.label for f in event.features] == ["building"]


def test_ground_truth_wins_over_a_later_annotation() -> None:
    truth = _annotation(1, "2026-01-01T10:00:00Z", [_polygon("road")], ground_truth=True)
    later = _annotation(2, "2026-01-01T11:00:00Z", [_polygon("building")])
    chosen, status = choose_annotation([truth, later])
    assert (chosen["id"], status) == (1, Status.SUBMITTED)
    assert [f.label for f in task_to_event(_task(truth, later)).features] == ["road"]


def test_a_cancelled_ground_truth_is_still_a_skip() -> None:
    skipped = _annotation(1, "2026-01-01T12:00:00Z", [], was_cancelled=True, ground_truth=True)
    kept = _annotation(2, "2026-01-01T11:00:00Z", [_polygon()])
    assert choose_annotation([skipped, kept])[0]["id"] == 2


def test_only_skips_is_skipped_and_no_annotation_is_deleted() -> None:
    skip = _annotation(1, "2026-01-01T12:00:00Z", [], was_cancelled=True)
    assert task_to_event(_task(skip)).status == Status.SKIPPED
    assert task_to_event(_task()).status == Status.DELETED
    assert choose_annotation([]) == (None, Status.DELETED)


# --- region types -------------------------------------------------------------------------


def test_brush_becomes_a_multipolygon_of_exactly_its_pixels() -> None:
    mask = np.zeros((H, W), bool)
    mask[20:40, 30:90] = True
    mask[70:75, 150:160] = True
    brush = {
        "id": "b",
        "type": "brushlabels",
        "original_width": W,
        "original_height": H,
        "image_rotation": 0,
        "value": {"format": "rle", "rle": encode_brush(mask), "brushlabels": ["tree"]},
    }
    event = task_to_event(_task(_annotation(1, "2026-01-01T10:00:00Z", [brush])))
    [feature] = event.features
    assert (feature.label, feature.geometry["type"]) == ("tree", "MultiPolygon")
    assert shape(feature.geometry).area == mask.sum()
    assert validate_event(event, Taxonomy()) == []


def test_polygon_rectangle_and_brush_in_one_annotation_keep_their_order() -> None:
    mask = np.zeros((H, W), bool)
    mask[0:10, 0:10] = True
    brush = {
        "type": "brushlabels",
        "original_width": W,
        "original_height": H,
        "value": {"format": "rle", "rle": encode_brush(mask), "brushlabels": ["water"]},
    }
    rect = {
        "type": "rectanglelabels",
        "original_width": W,
        "original_height": H,
        "value": {"x": 50, "y": 50, "width": 10, "height": 20, "rectanglelabels": ["road"]},
    }
    event = task_to_event(_task(_annotation(1, "2026-01-01T10:00:00Z", [_polygon(), rect, brush])))
    assert [f.label for f in event.features] == ["building", "road", "water"]
    assert shape(event.features[1].geometry).bounds == (100.0, 50.0, 120.0, 70.0)


@pytest.mark.parametrize(
    ("result", "code"),
    [
        (_polygon(points=[[1, 1], [5, 1], [5, 5]], image_rotation=90), "labelstudio.image_rotated"),
        ({**_polygon(), "value": {"points": [[1, 1], [2, 2], [1, 3]], "polygonlabels": []}},
         "labelstudio.region_unlabelled"),
        ({"type": "brushlabels", "original_width": W, "original_height": H,
          "value": {"format": "rle", "rle": encode_brush(np.zeros((H, W), bool)),
                    "brushlabels": ["tree"]}}, "brush.empty"),
        ({"type": "brushlabels", "original_width": W, "original_height": H,
          "value": {"format": "rle", "rle": encode_brush(np.ones((10, 10), bool)),
                    "brushlabels": ["tree"]}}, "brush.size_mismatch"),
    ],
)  # fmt: skip
def test_a_region_that_cannot_become_mask_pixels_refuses_the_revision(
    result: dict[str, Any], code: str
) -> None:
    with pytest.raises(SourceFormatError) as err:
        task_to_event(_task(_annotation(1, "2026-01-01T10:00:00Z", [result])))
    assert err.value.code == code


def test_region_types_without_area_are_kept_for_validate_to_quarantine() -> None:
    keypoint = {
        "type": "keypointlabels",
        "original_width": W,
        "original_height": H,
        "value": {"x": 5, "y": 5, "width": 1, "keypointlabels": ["building"]},
    }
    event = task_to_event(_task(_annotation(1, "2026-01-01T10:00:00Z", [keypoint])))
    [violation] = validate_event(event, Taxonomy())
    assert violation.code == "geometry.unsupported_type"


def test_non_region_results_are_not_features() -> None:
    choice = {"type": "choices", "value": {"choices": ["cloudy"]}}
    event = task_to_event(_task(_annotation(1, "2026-01-01T10:00:00Z", [choice, _polygon()])))
    assert [f.label for f in event.features] == ["building"]


# --- the image ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("image", "provider"),
    [
        ("/data/local-files/?d=chips/a.png", "labelstudio"),
        ("/data/upload/3/abc-a.png", "labelstudio"),
        ("https://cdn.example/a.jpg", "labelstudio"),
        ("/srv/scenes/a.tif", "geotiff"),
        ("scenes/a.tif", "geotiff"),
    ],
)
def test_the_image_is_read_where_the_annotator_saw_it(image: str, provider: str) -> None:
    event = task_to_event(_task(_annotation(1, "2026-01-01T10:00:00Z", [_polygon()]),
                                data={"image": image}))  # fmt: skip
    assert event.image is not None
    assert (event.image.provider, event.image.uri) == (provider, image)
    assert (event.image.width, event.image.height) == (W, H)


def test_a_cloud_uri_is_read_through_the_presign_endpoint() -> None:
    data = {"image": "s3://bucket/chips/a.png"}
    event = task_to_event(_task(_annotation(1, "2026-01-01T10:00:00Z", [_polygon()]), data=data))
    assert event.image is not None
    path, fileuri = event.image.uri.split("?fileuri=")
    assert path == "/tasks/42/presign/"
    assert base64.urlsafe_b64decode(fileuri).decode() == "s3://bucket/chips/a.png"


def test_georeference_in_the_task_data_travels_with_the_image() -> None:
    options = LabelStudioOptions(crs_key="epsg", bounds_key="extent", window_key="px")
    data = {
        "image": "/data/local-files/?d=a.png",
        "epsg": "EPSG:32631",
        "extent": [500000, 4100000, 500200, 4100100],
        "scene_uri": "/scenes/big.tif",
        "px": [1000, 2000, W, H],
    }
    event = task_to_event(
        _task(_annotation(1, "2026-01-01T10:00:00Z", [_polygon()]), data=data), options
    )
    image = event.image
    assert image is not None
    assert (image.bounds_crs, image.bounds) == ("EPSG:32631", (500000, 4100000, 500200, 4100100))
    assert (image.scene_uri, image.window) == ("/scenes/big.tif", (1000, 2000, W, H))


def test_regions_drawn_on_different_image_sizes_are_refused() -> None:
    other = _polygon(original_width=W * 2)
    with pytest.raises(SourceFormatError) as err:
        task_to_event(_task(_annotation(1, "2026-01-01T10:00:00Z", [_polygon(), other])))
    assert err.value.code == "labelstudio.image_size_inconsistent"
