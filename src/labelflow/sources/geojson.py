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
from labelflow.sources.base import SourceFormatError, revision_of

SOURCE = "geojson"
DEFAULT_CRS = "EPSG:4326"
"""RFC 7946: a collection without ``crs`` is WGS 84 longitude/latitude."""


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
) -> list[AnnotationEvent]:
    """One event per task in a FeatureCollection, in order of first appearance.

    Files carry no edit history, so the revision is an explicit ``revision`` property when
    there is one and otherwise ``updated_at`` (the file's modification time): an unchanged
    file re-ingested gives identical events, an edited and saved one a newer revision.
    """
    options = options or GeoJSONOptions()
    if doc.get("type") != "FeatureCollection" or not isinstance(doc.get("features"), list):
        raise SourceFormatError("geojson.invalid", "expected a FeatureCollection with features")
    crs = collection_crs(doc)
    groups: dict[str, list[dict[str, Any]]] = {}
    for index, item in enumerate(doc["features"]):
        if not isinstance(item, dict) or not isinstance(item.get("properties") or {}, dict):
            raise SourceFormatError("geojson.invalid", f"feature {index} is not a GeoJSON Feature")
        groups.setdefault(_task_id(doc, item, index, options), []).append(item)
    return [
        _event(task_id, items, doc, crs, updated_at, options, source)
        for task_id, items in groups.items()
    ]


def _prop(doc: dict[str, Any], item: dict[str, Any], name: str) -> Any:
    """A feature property, else the collection member of the same name."""
    value = (item.get("properties") or {}).get(name)
    return doc.get(name) if value is None else value


def _task_id(doc: dict[str, Any], item: dict[str, Any], index: int, options: GeoJSONOptions) -> str:
    task_id = _prop(doc, item, options.task_id_property)
    if task_id is None:
        image = _prop(doc, item, options.image_property)
        task_id = image.get("uri") if isinstance(image, dict) else image
    if task_id in (None, ""):
        raise SourceFormatError(
            "geojson.no_task",
            f"feature {index} has neither a {options.task_id_property!r} nor an image reference",
        )
    return str(task_id)


def _event(
    task_id: str,
    items: list[dict[str, Any]],
    doc: dict[str, Any],
    crs: str,
    updated_at: datetime,
    options: GeoJSONOptions,
    source: str,
) -> AnnotationEvent:
    features = []
    for item in items:
        label = (item.get("properties") or {}).get(options.class_property)
        if label in (None, ""):
            raise SourceFormatError(
                "geojson.missing_class",
                f"a feature of task {task_id!r} has no {options.class_property!r} property",
            )
        features.append(
            Feature(label=str(label), geometry=item.get("geometry") or {}, feature_id=_id(item))
        )
    first = items[0]
    revisions = [_prop(doc, i, options.revision_property) for i in items]
    explicit = [r for r in revisions if r is not None]
    try:
        return AnnotationEvent(
            source=source,
            task_id=task_id,
            revision=max(explicit) if explicit else revision_of(updated_at),
            status=Status(_prop(doc, first, options.status_property) or Status.SUBMITTED),
            features=features,
            coordinates=CoordSpace.GEO,
            crs=crs,
            image=_image(_prop(doc, first, options.image_property)),
            created_at=updated_at,
            updated_at=updated_at,
        )
    except (ValidationError, ValueError, TypeError) as exc:
        raise SourceFormatError("geojson.invalid", f"task {task_id!r}: {exc}") from exc


def _id(item: dict[str, Any]) -> str | None:
    return None if item.get("id") is None else str(item["id"])


def _image(value: Any) -> ImageRef | None:
    if value is None:
        return None
    if isinstance(value, dict):
        return ImageRef.model_validate(value)
    return ImageRef(uri=str(value))
