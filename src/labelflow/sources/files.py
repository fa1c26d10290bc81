"""Annotation files dropped into labelflow: GeoJSON, COCO or a Label Studio export.

The format is detected from the document's shape, not its file name, since exports get
renamed. Re-ingesting a file that did not change yields identical events (same task ids,
revisions and event ids), so the downstream dedup turns a repeated drop into a no-op.

Every unit of a file (a Label Studio task, a GeoJSON task, a COCO image) is read on its own:
one that cannot become an event is a :class:`~labelflow.sources.base.Refused` in its place and
the others still are events. A :class:`SourceFormatError` is raised only for a file that is
not one of these formats at all (unreadable, not JSON, an unknown shape).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from labelflow.model import AnnotationEvent
from labelflow.sources import jsontext
from labelflow.sources.base import EPOCH, Parsed, Refused, SourceFormatError
from labelflow.sources.coco import parse_coco
from labelflow.sources.geojson import GeoJSONOptions, parse_geojson
from labelflow.sources.labelstudio import LabelStudioOptions
from labelflow.sources.labelstudio_export import parse_tasks

Format = Literal["geojson", "coco", "labelstudio"]


class FileOptions(BaseModel):
    """Per-format settings for file ingestion."""

    model_config = ConfigDict(frozen=True)

    geojson: GeoJSONOptions = Field(default_factory=GeoJSONOptions)
    labelstudio: LabelStudioOptions = Field(default_factory=LabelStudioOptions)
    labelstudio_project: int | None = Field(
        None, description="Project id for exports whose tasks do not name it."
    )
    coco_task_prefix: str = "coco"
    images_root: str | None = Field(
        None, description="Where relative image paths point; the file's folder if unset."
    )
    max_file_bytes: int = Field(
        512 * 1024 * 1024, gt=0, description="Larger files are refused before being read."
    )


@dataclass(frozen=True)
class FileRead:
    """What one file became: an event or a refusal per unit, in file order."""

    path: Path
    format: Format
    items: list[Parsed]

    @property
    def events(self) -> list[AnnotationEvent]:
        return [item for item in self.items if isinstance(item, AnnotationEvent)]

    @property
    def refused(self) -> list[Refused]:
        return [item for item in self.items if isinstance(item, Refused)]


def _looks_like_task(item: Any) -> bool:
    return isinstance(item, jsontext.TooDeep) or (
        isinstance(item, dict) and ("data" in item or "annotations" in item)
    )


def detect_format(doc: Any) -> Format:
    """Which format a parsed JSON document is, from its shape.

    A list is a Label Studio export when any of its items looks like a task (has ``data`` or
    ``annotations``): the items that do not are refused one by one, not the whole file. A
    single task object is an export of one task.
    """
    if isinstance(doc, dict) and doc.get("type") == "FeatureCollection":
        return "geojson"
    if isinstance(doc, dict) and {"images", "annotations", "categories"} <= doc.keys():
        return "coco"
    if isinstance(doc, dict) and isinstance(doc.get("data"), dict) and "id" in doc:
        return "labelstudio"
    if isinstance(doc, list) and (not doc or any(_looks_like_task(t) for t in doc)):
        if doc and all(isinstance(t, jsontext.TooDeep) for t in doc):
            raise SourceFormatError(
                "json.too_deep", f"every item is nested deeper than {jsontext.MAX_DEPTH} levels"
            )
        return "labelstudio"
    if isinstance(doc, list) and any(isinstance(t, dict) and "annotation_id" in t for t in doc):
        raise SourceFormatError(
            "labelstudio.export_min_unsupported",
            "a Label Studio JSON-MIN export: it leaves out what labelflow needs (annotation "
            "times, skips, image sizes)",
            hint="export the project as JSON, not JSON-MIN",
        )
    raise SourceFormatError(
        "format.unknown",
        "not a GeoJSON FeatureCollection, a COCO file or a Label Studio JSON export",
        hint="COCO needs images, annotations and categories; an export is a list of tasks",
    )


def parse_document(
    doc: Any, updated_at: datetime, options: FileOptions | None = None
) -> tuple[Format, list[Parsed]]:
    """The format of an already-parsed document and what each of its units became;
    ``updated_at`` stands in for a revision in formats that carry none."""
    options = options or FileOptions()
    fmt = detect_format(doc)
    if fmt == "geojson":
        return fmt, parse_geojson(doc, updated_at, options.geojson)
    if fmt == "coco":
        return fmt, parse_coco(doc, updated_at, options.images_root, options.coco_task_prefix)
    tasks = doc if isinstance(doc, list) else [doc]
    return fmt, parse_tasks(tasks, options.labelstudio, options.labelstudio_project)


def read_file(path: Path, options: FileOptions | None = None) -> FileRead:
    """What each unit of one annotation file became. Its modification time is the revision
    of formats without one, so an unchanged file re-read gives the same events."""
    options = options or FileOptions()
    try:
        stat = path.stat()
        if stat.st_size > options.max_file_bytes:
            raise SourceFormatError(
                "file.too_large", f"{path}: {stat.st_size} bytes exceeds {options.max_file_bytes}"
            )
        data = path.read_bytes()
    except OSError as exc:
        raise SourceFormatError("file.unreadable", f"{path}: {exc}") from exc
    doc = jsontext.load(jsontext.decode_text(data, str(path)), str(path))
    if options.images_root is None:
        options = options.model_copy(update={"images_root": str(path.parent)})
    updated_at = EPOCH + timedelta(microseconds=stat.st_mtime_ns // 1000)
    try:
        fmt, items = parse_document(doc, updated_at, options)
    except SourceFormatError as exc:
        exc.message = f"{path}: {exc.message}"
        raise
    return FileRead(path, fmt, items)


def read_events(path: Path, options: FileOptions | None = None) -> list[AnnotationEvent]:
    """The events of a file in which every unit must be readable: the first refusal is
    raised as a :class:`SourceFormatError` (for callers that cannot quarantine)."""
    read = read_file(path, options)
    for refused in read.refused:
        raise SourceFormatError(refused.code, f"{path}: {refused.message}")
    return read.events
