"""Masks line up with their chip: known pixels, scaled pixels, and geo coordinates."""

from __future__ import annotations

import numpy as np
import pytest
from affine import Affine
from rasterio.warp import transform_geom

from labelflow.imagery.base import Chip
from labelflow.masks import MaskError, class_pixel_counts, rasterize_event, rasterize_features
from labelflow.model import AnnotationEvent, CoordSpace, Feature, ImageRef, Status, Taxonomy

TAXONOMY = Taxonomy()
CHIP = Chip.from_array(
    np.zeros((3, 64, 96), dtype=np.uint8),
    crs="EPSG:3857",
    transform=Affine(0.5, 0.0, 1_113_200.0, 0.0, -0.5, 6_000_000.0),
    nodata=None,
)


def box(x0: float, y0: float, x1: float, y1: float) -> dict:
    ring = [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]
    return {"type": "Polygon", "coordinates": [ring]}


def pixel_mask(*features: Feature, **kwargs: object) -> np.ndarray:
    return rasterize_features(features, TAXONOMY, chip=CHIP, space=CoordSpace.PIXEL, **kwargs)  # type: ignore[arg-type]


def test_pixel_polygon_burns_exactly_its_pixels() -> None:
    mask = pixel_mask(Feature(label="road", geometry=box(10, 30, 20, 50)))
    assert mask.shape == (64, 96) and mask.dtype == np.uint8
    expected = np.zeros_like(mask)
    expected[30:50, 10:20] = TAXONOMY.classes["road"]
    np.testing.assert_array_equal(mask, expected)


def test_pixel_coordinates_scale_to_a_chip_of_another_size() -> None:
    """The tool showed a 192x128 image; the chip is 96x64, so coordinates halve."""
    mask = pixel_mask(Feature(label="tree", geometry=box(20, 60, 40, 100)), source_size=(192, 128))
    assert np.argwhere(mask).min(axis=0).tolist() == [30, 10]
    assert np.argwhere(mask).max(axis=0).tolist() == [49, 19]


def test_later_features_win_where_they_overlap() -> None:
    mask = pixel_mask(
        Feature(label="building", geometry=box(0, 0, 10, 10)),
        Feature(label="tree", geometry=box(5, 5, 15, 15)),
    )
    assert mask[2, 2] == TAXONOMY.classes["building"]
    assert mask[7, 7] == TAXONOMY.classes["tree"]
    assert class_pixel_counts(mask, TAXONOMY) == {"building": 75, "tree": 100}


@pytest.mark.parametrize("crs", [None, "EPSG:3857", "EPSG:4326"])
def test_geo_polygon_gives_the_same_mask_as_its_pixel_equivalent(crs: str | None) -> None:
    pixel = box(12, 7, 41, 33)
    geo = {
        "type": "Polygon",
        "coordinates": [[CHIP.transform @ xy for xy in pixel["coordinates"][0]]],
    }
    if crs == "EPSG:4326":
        geo = transform_geom("EPSG:3857", crs, geo)
    by_geo = rasterize_features(
        [Feature(label="building", geometry=geo)],
        TAXONOMY,
        chip=CHIP,
        space=CoordSpace.GEO,
        features_crs=crs,
    )
    np.testing.assert_array_equal(by_geo, pixel_mask(Feature(label="building", geometry=pixel)))


def test_many_lonlat_features_keep_their_order_and_classes() -> None:
    """Reprojected together, each feature still lands where its pixel twin does."""
    boxes = [(0, 0, 30, 20, "water"), (10, 5, 50, 40, "building"), (40, 30, 90, 60, "tree")]
    pixel_features, lonlat_features = [], []
    for x0, y0, x1, y1, label in boxes:
        pixel = box(x0, y0, x1, y1)
        mercator = {
            "type": "Polygon",
            "coordinates": [[CHIP.transform @ xy for xy in pixel["coordinates"][0]]],
        }
        pixel_features.append(Feature(label=label, geometry=pixel))
        lonlat_features.append(
            Feature(label=label, geometry=transform_geom("EPSG:3857", "EPSG:4326", mercator))
        )
    by_geo = rasterize_features(
        lonlat_features, TAXONOMY, chip=CHIP, space=CoordSpace.GEO, features_crs="EPSG:4326"
    )
    np.testing.assert_array_equal(by_geo, pixel_mask(*pixel_features))


def test_event_uses_its_image_size_and_empty_events_give_background() -> None:
    event = AnnotationEvent(
        source="test",
        task_id="t",
        revision=1,
        status=Status.APPROVED,
        features=[Feature(label="water", geometry=box(0, 0, 192, 128))],
        image=ImageRef(uri="x.tif", width=192, height=128),
    )
    assert (rasterize_event(event, CHIP, TAXONOMY) == TAXONOMY.classes["water"]).all()
    empty = event.model_copy(update={"features": []})
    assert not rasterize_event(empty, CHIP, TAXONOMY).any()


def test_unknown_class_and_unusable_crs_are_mask_errors() -> None:
    with pytest.raises(MaskError) as info:
        pixel_mask(Feature(label="volcano", geometry=box(0, 0, 1, 1)))
    assert info.value.code == "mask.unknown_class"
    with pytest.raises(MaskError) as info:
        rasterize_features(
            [Feature(label="road", geometry=box(0, 0, 1, 1))],
            TAXONOMY,
            chip=CHIP,
            space=CoordSpace.GEO,
            features_crs="EPSG:999999",
        )
    assert info.value.code == "mask.crs_invalid"
