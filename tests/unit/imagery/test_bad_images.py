"""The imagery cases of the bad-input corpus: reading each image fails with the case's own
code, and only an unreachable source is worth retrying."""

from __future__ import annotations

from typing import Any

import pytest

from bad_inputs import MATERIALIZE, SPEC
from labelflow.imagery.base import ImageryError
from labelflow.imagery.geotiff import GeoTiffProvider
from labelflow.model import ImageRef

READ_ONLY = [c for c in MATERIALIZE if c["code"] != "imagery.crs_invalid"]
"""``imagery.crs_invalid`` needs labels in a CRS to place: materialize judges it, not a read."""


@pytest.mark.parametrize("case", READ_ONLY, ids=[c["name"] for c in READ_ONLY])
def test_reading_a_bad_image_fails_with_its_own_code(case: dict[str, Any]) -> None:
    image = ImageRef.model_validate({**SPEC["base"]["image"], **case["patch"]["image"]})
    provider = GeoTiffProvider(http_timeout_s=5)
    try:
        with pytest.raises(ImageryError) as err:
            provider.read(image)
    finally:
        provider.close()
    assert (err.value.code, err.value.transient) == (case["code"], bool(case.get("transient")))
