"""GeoJSON FeatureCollections of labelled polygons, in geographic coordinates.

One file may hold several tasks: features are grouped by a task id property, falling back
to the collection's own ``task_id`` member and then to the image reference (one image, one
task). The image reference can be a collection member (for a file per scene) or a feature
property (for a file per campaign); a string is a GeoTIFF path or URL, an object is a full
:class:`~labelflow.model.ImageRef`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from labelflow.model import AnnotationEvent, CoordSpace, Feature, ImageRef, Status
from labelflow.sources import jsontext
from labelflow.sources.base import (
    Parsed,
    Refused,
    SourceFormatError,
    all_finite,
    revision_of,
    validation_summary,
)

SOURCE = "geojson"
DEFAULT_CRS = "EPSG:4326"
"""RFC 7946: a collection without ``crs`` is WGS 84 longitude/latitude."""
MAX_TASK_ID_CHARS = 512


class GeoJSONOptions(BaseModel):
    """Which properties carry what; names differ between labelling tools and teams."""

    model_config = ConfigDict(frozen=True)

    class_property: str = "class"
    image_property: str = "image"
    task_id_property: str = "task_id"
    revision_property: str = "revision"
    status_property: str = "status"


def collection_crs(doc: dict[str, Any]) -> str:
    """The ``crs`` member as text: a plain string, or the pre-RFC 7946 named-CRS object."""
    crs = doc.get("crs")
    if crs is None:
        return DEFAULT_CRS
    if isinstance(crs, str):
        return crs
    name = (crs.get("properties") or {}).get("name") if isinstance(crs, dict) else None
    if not isinstance(name, str):
        raise SourceFormatError("geojson.invalid_crs", f"cannot read the crs member {crs!r}")
    return name


def parse_geojson(
    doc: dict[str, Any],
    updated_at: datetime,
    options: GeoJSONOptions | None = None,
    source: str = SOURCE,
) -> list[Parsed]:
    """One event per task in a FeatureCollection, in order of first appearance, or a
    :class:`Refused` for a task (or a feature that names none) that cannot be one.

    Files carry no edit history, so the revision is an explicit ``revision`` property when
    there is one and otherwise ``updated_at`` (the file's modification time): an unchanged
    file re-ingested gives identical events, an edited and saved one a newer revision.

    A bad feature refuses its whole task, not just itself: dropping it would store the task
    with a label missing.
    """
    options = options or GeoJSONOptions()
    if doc.get("type") != "FeatureCollection" or not isinstance(doc.get("features"), list):
        raise SourceFormatError("geojson.invalid", "expected a FeatureCollection with features")
    crs = collection_crs(doc)
    groups: dict[str, list[tuple[int, dict[str, Any]]]] = {}
    out: list[tuple[int, Parsed]] = []
    for index, item in enumerate(doc["features"]):
        try:
            _check_feature_shape(item, index)
            task_id = _task_id(doc, item, index, options)
        except SourceFormatError as exc:
            out.append((index, Refused.of(exc.code, exc.message, index, item)))
            continue
        groups.setdefault(task_id, []).append((index, item))
    for task_id, items in groups.items():
        first = items[0][0]
        try:
            parsed: Parsed = _event(task_id, items, doc, crs, updated_at, options, source)
        except SourceFormatError as exc:
            unit = [item for _, item in items]
            parsed = Refused.of(exc.code, exc.message, first, unit, task_id)
        out.append((first, parsed))
    return [parsed for _, parsed in sorted(out, key=lambda pair: pair[0])]


def _prop(doc: dict[str, Any], item: dict[str, Any], name: str) -> Any:
    """A feature property, else the collection member of the same name."""
    value = (item.get("properties") or {}).get(name)
    return doc.get(name) if value is None else value


def _check_feature_shape(item: Any, index: int) -> None:
    if not isinstance(item, dict) or not isinstance(item.get("properties") or {}, dict):
        raise SourceFormatError(
            "geojson.feature_invalid",
            f"feature #{index}: not a GeoJSON Feature (an object with object properties)",
        )
    found = jsontext.problem(item)
    if found is not None:
        raise SourceFormatError(found[0], f"feature #{index}: {found[1]}")


def _task_id(doc: dict[str, Any], item: dict[str, Any], index: int, options: GeoJSONOptions) -> str:
    task_id = _prop(doc, item, options.task_id_property)
    field = options.task_id_property
    if task_id is None:
        image = _prop(doc, item, options.image_property)
        task_id = image.get("uri") if isinstance(image, dict) else image
        field = options.image_property
    if task_id in (None, ""):
        raise SourceFormatError(
            "geojson.no_task",
            f"feature #{index} has neither a {options.task_id_property!r} nor an image reference",
        )
    if isinstance(task_id, bool) or not isinstance(task_id, str | int):
        raise SourceFormatError(
            "geojson.task_id_invalid",
            f"feature #{index}: {field}: {task_id!r:.60} is not a task id (text or an integer)",
        )
    text = str(task_id)
    if len(text) > MAX_TASK_ID_CHARS or any(ord(c) < 32 or ord(c) == 127 for c in text):
        raise SourceFormatError(
            "geojson.task_id_invalid",
            f"feature #{index}: {field}: {text!r:.60} is not a task id (at most "
            f"{MAX_TASK_ID_CHARS} printable characters)",
        )
    return text


def _event(
    task_id: str,
    items: list[tuple[int, dict[str, Any]]],
    doc: dict[str, Any],
    crs: str,
    updated_at: datetime,
    options: GeoJSONOptions,
    source: str,
) -> AnnotationEvent:
    features = [_feature(task_id, index, item, options) for index, item in items]
    first = items[0][1]
    explicit = []
    for index, item in items:
        revision = _prop(doc, item, options.revision_property)
        if revision is not None:
            if not (isinstance(revision, int) and not isinstance(revision, bool) and revision >= 0):
                raise SourceFormatError(
                    "geojson.revision_invalid",
                    f"task {task_id!r}, feature #{index}: {options.revision_property}: "
                    f"{revision!r:.60} is not a revision (a non-negative integer)",
                )
            explicit.append(revision)
    status = _prop(doc, first, options.status_property) or Status.SUBMITTED
    if status not in tuple(Status):
        raise SourceFormatError(
            "geojson.status_invalid",
            f"task {task_id!r}, feature #{items[0][0]}: {options.status_property}: "
            f"{status!r:.60} is not one of {', '.join(Status)}",
        )
    try:
        image = _image(_prop(doc, first, options.image_property))
    except (ValidationError, ValueError, TypeError) as exc:
        raise SourceFormatError(
            "geojson.image_invalid",
            f"task {task_id!r}, feature #{items[0][0]}: {options.image_property}: "
            f"{validation_summary(exc)}",
        ) from exc
    try:
        return AnnotationEvent(
            source=source,
            task_id=task_id,
            revision=max(explicit) if explicit else revision_of(updated_at),
            status=Status(status),
            features=features,
            coordinates=CoordSpace.GEO,
            crs=crs,
            image=image,
            created_at=updated_at,
            updated_at=updated_at,
        )
    except (ValidationError, ValueError, TypeError) as exc:
        raise SourceFormatError(
            "geojson.invalid", f"task {task_id!r}: {validation_summary(exc)}"
        ) from exc


def _feature(task_id: str, index: int, item: dict[str, Any], options: GeoJSONOptions) -> Feature:
    where = f"task {task_id!r}, feature #{index}"
    label = (item.get("properties") or {}).get(options.class_property)
    if label in (None, ""):
        raise SourceFormatError(
            "geojson.missing_class", f"{where} has no {options.class_property!r} property"
        )
    if isinstance(label, bool) or not isinstance(label, str | int):
        raise SourceFormatError(
            "geojson.class_invalid",
            f"{where}: {options.class_property}: {label!r:.60} is not a class name",
        )
    geometry = item.get("geometry")
    if geometry is None:
        raise SourceFormatError(
            "geojson.geometry_missing", f"{where}: geometry: a label needs a shape, it has none"
        )
    if not isinstance(geometry, dict):
        raise SourceFormatError(
            "geojson.geometry_invalid", f"{where}: geometry: {geometry!r:.60} is not an object"
        )
    if not all_finite(geometry.get("coordinates")):
        raise SourceFormatError(
            "geometry.non_finite", f"{where}: geometry.coordinates: a coordinate is NaN or infinite"
        )
    return Feature(label=str(label), geometry=geometry, feature_id=_id(item))


def _id(item: dict[str, Any]) -> str | None:
    return None if item.get("id") is None else str(item["id"])


def _image(value: Any) -> ImageRef | None:
    if value is None:
        return None
    if isinstance(value, dict):
        return ImageRef.model_validate(value)
    if not isinstance(value, str):
        raise ValueError(f"{value!r:.60} is not an image path, URL or object")
    return ImageRef(uri=value)
