"""COCO object-detection JSON with polygon segmentations, in pixel coordinates.

Images become tasks and categories become labels. An image without annotations is still a
task: it yields an all-background sample, which is a label too ("nothing here").
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import ValidationError

from labelflow.model import AnnotationEvent, CoordSpace, Feature, ImageRef, Status
from labelflow.sources import jsontext
from labelflow.sources.base import (
    Parsed,
    Refused,
    SourceFormatError,
    closed_ring,
    is_finite,
    is_number,
    polygon,
    revision_of,
    validation_summary,
)

SOURCE = "coco"


def parse_coco(
    doc: dict[str, Any],
    updated_at: datetime,
    images_root: str | None = None,
    task_prefix: str = "coco",
    source: str = SOURCE,
) -> list[Parsed]:
    """One event per image, in the file's image order, or a :class:`Refused` for an image
    (or an annotation that names none of them) that cannot be one.

    ``task_prefix`` namespaces the task ids (``<prefix>:<file_name>``): COCO image ids are
    only unique inside one file, file names usually across a dataset. ``images_root`` turns
    relative ``file_name``s into paths the GeoTIFF provider can open. The revision is
    ``updated_at`` (the file's modification time), as COCO carries no edit history.

    A bad annotation refuses its whole image: dropping it would store the image with an
    object missing. Images sharing an id are all refused, since their annotations cannot be
    told apart.
    """
    categories = _categories(doc)
    images = doc.get("images")
    annotations = doc.get("annotations") or []
    if not isinstance(images, list) or not isinstance(annotations, list):
        raise SourceFormatError("coco.invalid", "images and annotations must be lists")
    out: list[tuple[int, Parsed]] = []
    by_id: dict[Any, list[int]] = {}
    for index, image in enumerate(images):
        problem = _image_problem(image)
        if problem is not None:
            out.append(
                (index, Refused.of(problem[0], f"image #{index}: {problem[1]}", index, image))
            )
            continue
        by_id.setdefault(image["id"], []).append(index)
    per_image: dict[int, list[Feature]] = {}
    anns_of: dict[int, list[Any]] = {}
    faults: dict[int, SourceFormatError] = {}
    for a_index, ann in enumerate(annotations):
        if not isinstance(ann, dict):
            message = f"annotation #{a_index} is not an object"
            out.append((len(images), Refused.of("coco.annotation_invalid", message, a_index, ann)))
            continue
        owners = _hashable_lookup(by_id, ann.get("image_id"))
        if owners is None:
            message = f"annotation {ann.get('id')!r:.40} (#{a_index}) names an unknown image"
            out.append((len(images), Refused.of("coco.unknown_image", message, a_index, ann)))
            continue
        owner = owners[0]
        anns_of.setdefault(owner, []).append(ann)
        if owner in faults:
            continue
        try:
            feature = _feature(ann, a_index, categories)
        except SourceFormatError as exc:
            faults[owner] = exc
            continue
        per_image.setdefault(owner, []).append(feature)
    for image_id, indices in by_id.items():
        for index in indices:
            image = images[index]
            unit = {"image": image, "annotations": anns_of.get(indices[0], [])}
            name = _name(image, index)
            if len(indices) > 1:
                message = f"{name}: id: {image_id!r} is also the id of images {indices}"
                parsed: Parsed = Refused.of("coco.image_duplicate", message, index, unit)
            elif index in faults:
                exc = faults[index]
                parsed = Refused.of(exc.code, f"{name}: {exc.message}", index, unit)
            else:
                try:
                    parsed = _event(
                        image,
                        per_image.get(index, []),
                        updated_at,
                        images_root,
                        task_prefix,
                        source,
                    )
                except SourceFormatError as exc:
                    parsed = Refused.of(exc.code, f"{name}: {exc.message}", index, unit)
            out.append((index, parsed))
    return [parsed for _, parsed in sorted(out, key=lambda pair: pair[0])]


def _categories(doc: dict[str, Any]) -> dict[Any, str]:
    try:
        categories = {c["id"]: c["name"] for c in doc["categories"]}
    except (KeyError, TypeError) as exc:
        raise SourceFormatError("coco.invalid", f"categories are malformed: {exc}") from exc
    if not all(isinstance(name, str) and name for name in categories.values()):
        raise SourceFormatError("coco.invalid", "a category name is not text")
    return categories


def _image_problem(image: Any) -> tuple[str, str] | None:
    if not isinstance(image, dict):
        return "coco.image_invalid", "an image is an object"
    if image.get("id") is None or isinstance(image["id"], bool | dict | list | float):
        return "coco.image_invalid", f"id: {image.get('id')!r:.40} is not an image id"
    return jsontext.problem(image)


def _hashable_lookup(table: dict[Any, list[int]], key: Any) -> list[int] | None:
    if isinstance(key, bool) or not isinstance(key, str | int):
        return None
    return table.get(key)


def _name(image: dict[str, Any], index: int) -> str:
    name = image.get("file_name")
    return f"image {name!r:.80} (#{index})" if isinstance(name, str) else f"image #{index}"


def _feature(ann: dict[str, Any], a_index: int, categories: dict[Any, str]) -> Feature:
    where = f"annotation {ann.get('id')!r:.40} (#{a_index})"
    found = jsontext.problem(ann)
    if found is not None:
        raise SourceFormatError(found[0], f"{where}: {found[1]}")
    category = _hashable_lookup({k: [0] for k in categories}, ann.get("category_id"))
    if category is None:
        raise SourceFormatError(
            "coco.unknown_category",
            f"{where}: category_id: {ann.get('category_id')!r:.40} is a category the file "
            "does not define",
        )
    return Feature(
        label=categories[ann["category_id"]],
        geometry=_geometry(ann, where),
        feature_id=None if ann.get("id") is None else str(ann["id"]),
    )


def _geometry(ann: dict[str, Any], where: str) -> dict[str, Any]:
    segmentation = ann.get("segmentation")
    if isinstance(segmentation, dict):
        raise SourceFormatError(
            "coco.rle_unsupported",
            f"{where}: segmentation: an RLE mask; only polygon segmentations are read",
            hint="export polygons, or vectorise the masks before ingesting",
        )
    if segmentation is not None and not isinstance(segmentation, list):
        raise SourceFormatError(
            "coco.invalid_segmentation", f"{where}: segmentation: a list of polygons"
        )
    parts = [_points(flat, where) for flat in segmentation or []]
    if not parts:
        return _bbox(ann, where)
    if len(parts) == 1:
        return polygon(parts)
    # Several lists are several pieces of one object (e.g. a building split by a tree).
    return {"type": "MultiPolygon", "coordinates": [[closed_ring(p)] for p in parts]}


def _bbox(ann: dict[str, Any], where: str) -> dict[str, Any]:
    bbox = ann.get("bbox")
    if not bbox:
        raise SourceFormatError(
            "coco.invalid_segmentation", f"{where}: neither a segmentation nor a bbox"
        )
    if not (isinstance(bbox, list) and len(bbox) == 4 and all(is_number(v) for v in bbox)):
        raise SourceFormatError(
            "coco.bbox_invalid", f"{where}: bbox: {bbox!r:.60} is not [x, y, width, height]"
        )
    if not all(is_finite(v) for v in bbox):
        raise SourceFormatError("geometry.non_finite", f"{where}: bbox: NaN or infinite")
    x, y, w, h = bbox
    if w < 0 or h < 0:
        raise SourceFormatError(
            "geometry.negative_extent",
            f"{where}: bbox: width {w} and height {h} cannot be negative",
        )
    return polygon([[(x, y), (x + w, y), (x + w, y + h), (x, y + h)]])


def _points(flat: Any, where: str) -> list[tuple[float, float]]:
    if not isinstance(flat, list) or len(flat) % 2 or not all(is_number(c) for c in flat):
        raise SourceFormatError(
            "coco.invalid_segmentation",
            f"{where}: segmentation: a polygon is a flat list of x, y numbers",
        )
    if not all(is_finite(c) for c in flat):
        raise SourceFormatError(
            "geometry.non_finite", f"{where}: segmentation: a coordinate is NaN or infinite"
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
        raise SourceFormatError("coco.image_invalid", validation_summary(exc)) from exc
