"""Domain types: annotation revisions in, sample versions out.

These pydantic models are at once validation, JSON schema, docs and wire shape (see
events.py for the envelope that carries them over Kafka). Geometry stays GeoJSON-shaped
(``{"type": "Polygon", "coordinates": ...}``) so shapely reads it directly and every source
format maps onto it without loss.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from labelflow.events import register

ANNOTATION_SCHEMA = "labelflow.annotation"
ANNOTATION_SCHEMA_VERSION = 1
SAMPLE_SCHEMA = "labelflow.sample"
SAMPLE_SCHEMA_VERSION = 1


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """``value`` with a time zone: a naive time is UTC (SQLite hands stored times back naive,
    and sources write them so)."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


class Status(StrEnum):
    """Where a revision stands in the labelling tool's review flow."""

    SUBMITTED = "submitted"
    APPROVED = "approved"
    REJECTED = "rejected"
    SKIPPED = "skipped"
    DELETED = "deleted"


class CoordSpace(StrEnum):
    """``pixel``: x right, y down, in pixels of the task image (the chip).
    ``geo``: coordinates in the event's ``crs`` (default: the image's CRS)."""

    PIXEL = "pixel"
    GEO = "geo"


class Feature(BaseModel):
    """One labelled shape. Rectangles are converted to polygons by the sources."""

    model_config = ConfigDict(frozen=True)

    label: str = Field(min_length=1, description="Class name from the taxonomy.")
    geometry: dict[str, Any] = Field(description="GeoJSON Polygon or MultiPolygon.")
    feature_id: str | None = None


class ImageRef(BaseModel):
    """Where the pixels of a task come from.

    ``provider`` picks the imagery provider: ``geotiff`` (``uri`` is a path or URL to a
    GeoTIFF/COG), ``xyz`` (``uri`` is a ``{z}/{x}/{y}`` template), ``synthetic`` (``uri`` is
    a scene id the synthetic provider renders deterministically), ``labelstudio`` (``uri`` is
    the image as Label Studio serves it to the annotator: ``/data/…``, a URL, a presign path).
    ``bounds`` is the chip's extent ``(minx, miny, maxx, maxy)`` in ``bounds_crs`` (the
    image's CRS if unset); without bounds the chip is the whole image. ``width``/``height``
    are the chip's pixel size when the source knows it (Label Studio does), used to scale
    pixel coordinates. ``scene_uri`` and ``window`` say where an image cut from a larger
    GeoTIFF/COG came from: the scene and the pixel window ``(col_off, row_off, width,
    height)`` in it, which georeference the chip.
    """

    model_config = ConfigDict(frozen=True)

    provider: Literal["geotiff", "xyz", "synthetic", "labelstudio"] = "geotiff"
    uri: str = Field(min_length=1)
    scene_id: str | None = None
    bounds: tuple[float, float, float, float] | None = None
    bounds_crs: str | None = None
    width: int | None = Field(None, gt=0)
    height: int | None = Field(None, gt=0)
    zoom: int | None = Field(None, ge=0, le=24, description="XYZ zoom level.")
    scene_uri: str | None = Field(None, min_length=1)
    window: tuple[int, int, int, int] | None = None

    @field_validator("window")
    @classmethod
    def _positive_window(
        cls, v: tuple[int, int, int, int] | None
    ) -> tuple[int, int, int, int] | None:
        if v is not None and (v[2] <= 0 or v[3] <= 0):
            raise ValueError("a window's width and height must be positive")
        return v


@register(ANNOTATION_SCHEMA, ANNOTATION_SCHEMA_VERSION)
class AnnotationEvent(BaseModel):
    """The canonical annotation event: one revision of one task, from any source.

    ``task_id`` is the source's stable identifier (a UUID or the source's own key, never a
    reusable integer alone). ``revision`` increases monotonically per task; it decides which of
    two events wins, whatever order they arrive in.
    """

    model_config = ConfigDict(frozen=True)

    schema_version: Literal[1] = ANNOTATION_SCHEMA_VERSION
    source: str = Field(min_length=1, description="e.g. labelstudio, geojson, coco, synthetic")
    task_id: str = Field(min_length=1, max_length=512)
    revision: int = Field(ge=0)
    status: Status
    features: list[Feature] = Field(default_factory=list)
    coordinates: CoordSpace = CoordSpace.PIXEL
    crs: str | None = Field(None, description="CRS of geo coordinates; default: image CRS.")
    image: ImageRef | None = None
    annotator: str | None = None
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)

    @field_validator("task_id")
    @classmethod
    def _no_control_chars(cls, v: str) -> str:
        if any(ord(c) < 32 for c in v):
            raise ValueError("task_id must not contain control characters")
        return v

    @property
    def event_id(self) -> str:
        """Deterministic identity: the same revision from any delivery has the same id."""
        raw = f"{self.source}\x1f{self.task_id}\x1f{self.revision}\x1f{self.status}"
        return hashlib.sha256(raw.encode()).hexdigest()[:32]

    @property
    def removes_sample(self) -> bool:
        return self.status in (Status.REJECTED, Status.SKIPPED, Status.DELETED)


class Taxonomy(BaseModel):
    """Class names and their mask index. Index 0 is background and is never a class."""

    classes: dict[str, int] = Field(
        default_factory=lambda: {"building": 1, "road": 2, "tree": 3, "water": 4}
    )
    ignore_index: int = 255

    @field_validator("classes")
    @classmethod
    def _valid_indices(cls, v: dict[str, int]) -> dict[str, int]:
        if any(i <= 0 or i >= 255 for i in v.values()):
            raise ValueError("class indices must be in 1..254 (0 is background, 255 ignore)")
        if len(set(v.values())) != len(v):
            raise ValueError("class indices must be unique")
        return v


class CheckResult(BaseModel):
    """One quality rule applied to one thing: stable code, pass/fail, measured value."""

    code: str
    passed: bool
    value: float | None = None
    threshold: float | None = None
    message: str = ""


class Lineage(BaseModel):
    """Where a sample version came from, enough to explain and to reproduce it."""

    source: str
    task_id: str
    revision: int
    event_id: str
    image_uri: str
    image_content_hash: str
    code_version: str
    config_hash: str
    kafka_topic: str | None = None
    kafka_partition: int | None = None
    kafka_offset: int | None = None


@register(SAMPLE_SCHEMA, SAMPLE_SCHEMA_VERSION)
class SampleVersion(BaseModel):
    """A training example made from one annotation revision (materialize → commit).

    ``sample_id`` is the task id: one sample per task, one version per accepted revision.
    Artifacts are content-addressed: the hash is the blob key.
    """

    schema_version: Literal[1] = SAMPLE_SCHEMA_VERSION
    sample_id: str
    revision: int
    image_hash: str
    mask_hash: str
    width: int
    height: int
    crs: str | None
    transform: tuple[float, float, float, float, float, float] | None = Field(
        None, description="Affine (a, b, c, d, e, f) of the chip, rasterio order."
    )
    bounds: tuple[float, float, float, float] | None = None
    class_pixels: dict[str, int] = Field(default_factory=dict)
    features: list[Feature] = Field(default_factory=list)
    checks: list[CheckResult] = Field(default_factory=list)
    lineage: Lineage
    created_at: datetime = Field(default_factory=utcnow)


class Reason(BaseModel):
    """Why something was refused: a stable code (``geometry.self_intersection``) and a human
    message; ``feature`` is the index of the offending feature when one is to blame."""

    model_config = ConfigDict(frozen=True)

    code: str
    message: str
    feature: int | None = None


@register("labelflow.quarantined", 1)
class Quarantined(BaseModel):
    """A record held back for a person to look at, with every reason it was refused.

    ``event`` is the parsed revision when it could be parsed; ``raw_excerpt`` keeps the start
    of the original bytes when it could not, so the bad input itself stays visible.
    """

    stage: str
    reasons: list[Reason] = Field(min_length=1)
    task_id: str | None = None
    revision: int | None = None
    event: AnnotationEvent | None = None
    raw_excerpt: str | None = None
    source_topic: str
    source_partition: int
    source_offset: int
    quarantined_at: datetime = Field(default_factory=utcnow)


@register("labelflow.sample-removal", 1)
class SampleRemoval(BaseModel):
    """A revision that removes its task's sample (rejected, skipped or deleted)."""

    sample_id: str
    revision: int
    status: Status
    source: str
    event_id: str
