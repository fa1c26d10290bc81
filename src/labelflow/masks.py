"""Rasterize labelled shapes into a class-index mask aligned with a chip.

The mask has the chip's height, width and transform, so a pixel of the mask labels the same
ground as the pixel of the image. Values: 0 is background, a class's index from the
:class:`~labelflow.model.Taxonomy` elsewhere. A pixel belongs to a shape when its centre lies
inside it (GDAL's default rule), and where shapes overlap the later feature wins — the order
of ``features`` is the order the annotator drew them, and the same input always burns the
same pixels, so mask hashes are stable.

Coordinates come in two spaces (:class:`~labelflow.model.CoordSpace`):

- ``pixel``: x right, y down, in pixels of the task image as the labelling tool showed it.
  When the tool's image size (``ImageRef.width``/``height``) differs from the chip actually
  read (e.g. the chip was downsampled), coordinates are scaled to the chip.
- ``geo``: coordinates in the event's ``crs`` (default the chip's), reprojected to the chip's
  CRS first.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from affine import Affine
from rasterio.errors import CRSError
from rasterio.features import rasterize
from rasterio.warp import transform_geom

from labelflow.errors import PermanentError
from labelflow.imagery.base import Chip
from labelflow.model import AnnotationEvent, CoordSpace, Feature, Taxonomy

BACKGROUND = 0


class MaskError(PermanentError):
    """Labels that cannot be drawn on the chip; permanent (the event itself is at fault).

    Codes: ``mask.unknown_class`` (a label missing from the taxonomy), ``mask.crs_invalid``
    (geo coordinates that cannot be brought into the chip's CRS).
    """


def rasterize_event(event: AnnotationEvent, chip: Chip, taxonomy: Taxonomy) -> np.ndarray:
    """The mask of ``event``'s features on ``chip`` (see :func:`rasterize_features`)."""
    image = event.image
    source_size = (image.width, image.height) if image and image.width and image.height else None
    return rasterize_features(
        event.features,
        taxonomy,
        chip=chip,
        space=event.coordinates,
        features_crs=event.crs,
        source_size=source_size,
    )


def rasterize_features(
    features: Sequence[Feature],
    taxonomy: Taxonomy,
    *,
    chip: Chip,
    space: CoordSpace,
    features_crs: str | None = None,
    source_size: tuple[int, int] | None = None,
) -> np.ndarray:
    """A ``uint8`` mask ``(height, width)`` of ``chip``, later features over earlier ones.

    ``source_size`` is ``(width, height)`` of the image pixel coordinates refer to; unset, it
    is the chip's own size.
    """
    shapes: list[tuple[dict[str, Any], int]] = []
    for feature in features:
        if feature.label not in taxonomy.classes:
            raise MaskError("mask.unknown_class", f"{feature.label!r} is not in the taxonomy")
        shapes.append((feature.geometry, taxonomy.classes[feature.label]))
    out_shape = (chip.height, chip.width)
    if not shapes:
        return np.zeros(out_shape, dtype=np.uint8)
    if space == CoordSpace.PIXEL:
        src_w, src_h = source_size or (chip.width, chip.height)
        # Inverse of the scale from source pixels to chip pixels: rasterize applies ~transform.
        transform = Affine.scale(src_w / chip.width, src_h / chip.height)
    else:
        transform = chip.transform
        geometries = _to_chip_crs([geom for geom, _ in shapes], features_crs, chip.crs)
        shapes = [(geom, value) for geom, (_, value) in zip(geometries, shapes, strict=True)]
    return rasterize(
        shapes, out_shape=out_shape, transform=transform, fill=BACKGROUND, dtype=np.uint8
    )


def _to_chip_crs(
    geometries: list[dict[str, Any]], src: str | None, dst: str | None
) -> list[dict[str, Any]]:
    """``geometries`` reprojected from ``src`` to ``dst`` in one call: each call sets up GDAL
    and both CRSs again (~0.1 ms), which per feature was most of a 13-feature mask's cost."""
    if src is None or src == dst:
        return geometries
    if dst is None:
        raise MaskError("mask.crs_invalid", f"labels are in {src} but the image has no CRS")
    try:
        return list(transform_geom(src, dst, geometries))
    except (CRSError, ValueError) as exc:
        raise MaskError(
            "mask.crs_invalid", f"cannot reproject labels {src} -> {dst}: {exc}"
        ) from exc


def class_pixel_counts(mask: np.ndarray, taxonomy: Taxonomy) -> dict[str, int]:
    """Pixels per class name (classes absent from the mask are omitted)."""
    counts = np.bincount(mask.ravel(), minlength=256)
    return {name: int(counts[i]) for name, i in sorted(taxonomy.classes.items()) if counts[i]}
