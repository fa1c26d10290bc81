"""COCO object-detection JSON with polygon segmentations, in pixel coordinates.

Images become tasks and categories become labels. An image without annotations is still a
task: it yields an all-background sample, which is a label too ("nothing here").
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import ValidationError

from labelflow.model import AnnotationEvent, CoordSpace, Feature, ImageRef, Status
from labelflow.sources.base import SourceFormatError, closed_ring, polygon, revision_of

SOURCE = "coco"


def parse_coco(
    doc: dict[str, Any],
    updated_at: datetime,
    images_root: str | None = None,
    task_prefix: str = "coco",
    source: str = SOURCE,
) -> list[AnnotationEvent]:
    """One event per image, in the file's image order.

    ``task_prefix`` namespaces the task ids (``<prefix>:<file_name>``): COCO image ids are
    only unique inside one file, file names usually across a dataset. ``images_root`` turns
    relative ``file_name``s into paths the GeoTIFF provider can open. The revision is
    ``updated_at`` (the file's modification time), as COCO carries no edit history.
    """
    try:
        images = {image["id"]: image for image in doc["images"]}
        categories = {c["id"]: str(c["name"]) for c in doc["categories"]}
        annotations = list(doc.get("annotations") or [])
    except (KeyError, TypeError) as exc:
        raise SourceFormatError("coco.invalid", f"images/categories are malformed: {exc}") from exc
    per_image: dict[Any, list[Feature]] = {image_id: [] for image_id in images}
    for ann in annotations:
        if ann.get("image_id") not in per_image:
            raise SourceFormatError(
                "coco.unknown_image", f"annotation {ann.get('id')} names unknown image"
            )
        if ann.get("category_id") not in categories:
            raise SourceFormatError(
                "coco.unknown_category",
                f"annotation {ann.get('id')} names category {ann.get('category_id')!r}, "
                "which the file does not define",
            )
        feature = Feature(
            label=categories[ann["category_id"]],
            geometry=_geometry(ann),
            feature_id=None if ann.get("id") is None else str(ann["id"]),
        )
        per_image[ann["image_id"]].append(feature)
    return [
        _event(images[image_id], features, updated_at, images_root, task_prefix, source)
        for image_id, features in per_image.items()
    ]


def _geometry(ann: dict[str, Any]) -> dict[str, Any]:
    segmentation = ann.get("segmentation")
    if isinstance(segmentation, dict):
        raise SourceFormatError(
            "coco.rle_unsupported",
            f"annotation {ann.get('id')} is an RLE mask; only polygon segmentations are read",
            hint="export polygons, or vectorise the masks before ingesting",
        )
    parts = [_points(ann, flat) for flat in segmentation or []]
    if not parts:
        if not ann.get("bbox"):
            raise SourceFormatError(
                "coco.invalid_segmentation", f"annotation {ann.get('id')} has no shape"
            )
        x, y, w, h = ann["bbox"]
        return polygon([[(x, y), (x + w, y), (x + w, y + h), (x, y + h)]])
    if len(parts) == 1:
        return polygon(parts)
    # Several lists are several pieces of one object (e.g. a building split by a tree).
    return {"type": "MultiPolygon", "coordinates": [[closed_ring(p)] for p in parts]}


def _points(ann: dict[str, Any], flat: Any) -> list[tuple[float, float]]:
    if not isinstance(flat, list) or len(flat) % 2:
        raise SourceFormatError(
            "coco.invalid_segmentation",
            f"annotation {ann.get('id')}: a polygon is a flat list of x, y pairs",
        )
    return list(zip(flat[0::2], flat[1::2], strict=True))


def _event(
    image: dict[str, Any],
    features: list[Feature],
    updated_at: datetime,
    images_root: str | None,
    task_prefix: str,
    source: str,
) -> AnnotationEvent:
    file_name = str(image.get("file_name") or image["id"])
    uri = f"{images_root.rstrip('/')}/{file_name}" if images_root else file_name
    try:
        return AnnotationEvent(
            source=source,
            task_id=f"{task_prefix}:{file_name}",
            revision=revision_of(updated_at),
            status=Status.SUBMITTED,
            features=features,
            coordinates=CoordSpace.PIXEL,
            image=ImageRef(uri=uri, width=image.get("width"), height=image.get("height")),
            created_at=updated_at,
            updated_at=updated_at,
        )
    except ValidationError as exc:
        raise SourceFormatError("coco.invalid", f"image {file_name!r}: {exc}") from exc
