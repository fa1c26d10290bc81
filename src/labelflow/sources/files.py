"""Annotation files dropped into labelflow: GeoJSON, COCO or a Label Studio export.

The format is detected from the document's shape, not its file name, since exports get
renamed. Re-ingesting a file that did not change yields identical events (same task ids,
revisions and event ids), so the downstream dedup turns a repeated drop into a no-op.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from labelflow.model import AnnotationEvent
from labelflow.sources.base import EPOCH, SourceFormatError
from labelflow.sources.coco import parse_coco
from labelflow.sources.geojson import GeoJSONOptions, parse_geojson
from labelflow.sources.labelstudio import LabelStudioOptions, parse_export

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


def detect_format(doc: Any) -> Format:
    """Which format a parsed JSON document is, from its shape."""
    if isinstance(doc, dict) and doc.get("type") == "FeatureCollection":
        return "geojson"
    if isinstance(doc, dict) and {"images", "annotations", "categories"} <= doc.keys():
        return "coco"
    if isinstance(doc, list) and all(
        isinstance(t, dict) and "id" in t and isinstance(t.get("data"), dict) for t in doc
    ):
        return "labelstudio"
    raise SourceFormatError(
        "format.unknown",
        "not a GeoJSON FeatureCollection, a COCO file or a Label Studio JSON export",
        hint="COCO needs images, annotations and categories; an export is a list of tasks",
    )


def parse_document(
    doc: Any, updated_at: datetime, options: FileOptions | None = None
) -> list[AnnotationEvent]:
    """Events of an already-parsed document; ``updated_at`` stands in for a revision in
    formats that carry none."""
    options = options or FileOptions()
    fmt = detect_format(doc)
    if fmt == "geojson":
        return parse_geojson(doc, updated_at, options.geojson)
    if fmt == "coco":
        return parse_coco(doc, updated_at, options.images_root, options.coco_task_prefix)
    return parse_export(doc, options.labelstudio, options.labelstudio_project)


def read_events(path: Path, options: FileOptions | None = None) -> list[AnnotationEvent]:
    """Events of one annotation file. Its modification time is the revision of formats
    without one, so an unchanged file re-read gives the same events."""
    options = options or FileOptions()
    try:
        stat = path.stat()
        if stat.st_size > options.max_file_bytes:
            raise SourceFormatError(
                "file.too_large", f"{path}: {stat.st_size} bytes exceeds {options.max_file_bytes}"
            )
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SourceFormatError("file.unreadable", f"{path}: {exc}") from exc
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SourceFormatError("format.malformed_json", f"{path}: {exc}") from exc
    if options.images_root is None:
        options = options.model_copy(update={"images_root": str(path.parent)})
    updated_at = EPOCH + timedelta(microseconds=stat.st_mtime_ns // 1000)
    try:
        return parse_document(doc, updated_at, options)
    except SourceFormatError as exc:
        exc.message = f"{path}: {exc.message}"
        raise
