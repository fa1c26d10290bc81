"""Label Studio as a source: a task as its API or an export shows it → one event; webhooks →
hints.

Label Studio's webhooks are a hint, not a log (sent once, with a one-second timeout, never
retried, unordered), so a webhook never becomes an annotation event by itself: it becomes a
:class:`TaskChanged` naming the tasks to look at, and the task's *current* state is read from
the REST API (:mod:`labelflow.sources.labelstudio_api`) and converted by
:func:`task_to_event`. Replaying or reordering hints is then harmless: each read yields the
newest revision, and a revision is derived from Label Studio's own ``updated_at`` so the same
state always yields the same event. :mod:`labelflow.sources.labelstudio_sync` does the
reading, the backfill and the polling.

Coordinates: Label Studio stores regions in percent of the image (0-100) together with the
image's ``original_width``/``original_height``; events carry pixels.
"""

from __future__ import annotations

import base64
import math
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from labelflow.events import register
from labelflow.model import AnnotationEvent, CoordSpace, Feature, ImageRef, Status
from labelflow.sources.base import SourceFormatError, parse_time, polygon, revision_of
from labelflow.sources.labelstudio_brush import brush_mask, mask_to_geometry

SOURCE = "labelstudio"

WebhookAction = Literal[
    "ANNOTATION_CREATED", "ANNOTATION_UPDATED", "ANNOTATIONS_DELETED", "TASKS_DELETED"
]
HintAction = WebhookAction | Literal["TASKS_LISTED"]
"""A webhook's action, or ``TASKS_LISTED``: found by listing the project (backfill, poll)."""

CLOUD_SCHEMES = ("s3://", "gs://", "gcs://", "azure-blob://")
"""Storage URIs Label Studio resolves through its presign endpoint (the API returns them
resolved unless a task was imported raw; exports keep them raw)."""

HANDLED_ACTIONS: tuple[str, ...] = WebhookAction.__args__  # type: ignore[attr-defined]
IGNORED_ACTIONS = ("TASKS_CREATED", "PROJECT_CREATED", "PROJECT_UPDATED", "PROJECT_DELETED")
"""A new task has no annotation yet and project edits change no label: nothing to fetch."""


class LabelStudioOptions(BaseModel):
    """How a project's tasks map onto events; the same for exports, webhooks and the API."""

    model_config = ConfigDict(frozen=True)

    image_key: str = "image"
    """Key of the image URL/path in task ``data`` (the ``$image`` of the labelling config)."""
    id_key: str = "uuid"
    """Key of a stable id in task ``data``. Label Studio reuses integer ids after deletions
    on SQLite, so ``<project>:<id>`` alone could attach a new task's labels to an old sample;
    when the importer puts its own id in the data, that id is the task id instead."""
    provider: Literal["auto", "labelstudio", "geotiff", "xyz", "synthetic"] = "auto"
    """Imagery provider unless the task data names one under ``provider``. ``auto``: a local
    file path is a GeoTIFF, anything else (``/data/…``, a URL, a cloud URI) is the image as
    Label Studio serves it to the annotator (``labelstudio``)."""
    crs_key: str = "crs"
    """Task data key of the CRS the image's ``bounds`` are in (georeference, optional)."""
    bounds_key: str = "bounds"
    """Task data key of the image's extent ``[minx, miny, maxx, maxy]`` in that CRS."""
    scene_key: str = "scene_uri"
    """Task data key of the original GeoTIFF/COG the displayed image was cut from."""
    window_key: str = "window"
    """Task data key of the pixel window ``[col_off, row_off, width, height]`` of the
    displayed image in that scene."""


@register("labelflow.task-changed", 1)
class TaskChanged(BaseModel):
    """A hint that tasks of a project changed: read their current state.

    ``task_ids`` are Label Studio's integer ids. ANNOTATIONS_DELETED names annotations only,
    not their tasks, so it arrives with empty ``task_ids`` and the ``annotation_ids``; the
    reader looks up which tasks held them. ``snapshot`` is the task as a listing of the
    project returned it (one-task hints from backfill and polling only): the reader uses it
    instead of asking again.
    """

    model_config = ConfigDict(frozen=True)

    source: str = SOURCE
    project: int
    task_ids: tuple[int, ...] = ()
    action: HintAction
    annotation_ids: tuple[int, ...] = ()
    snapshot: dict[str, Any] | None = None


# --- tasks → events ----------------------------------------------------------------------


def task_key(project: int | None, task: dict[str, Any], options: LabelStudioOptions) -> str:
    """The stable task id: the task data's own id if present, else ``<project>:<id>``."""
    own = (task.get("data") or {}).get(options.id_key)
    if own not in (None, ""):
        return str(own)
    return f"{project if project is not None else task.get('project')}:{task['id']}"


def task_to_event(
    task: dict[str, Any],
    options: LabelStudioOptions | None = None,
    project: int | None = None,
) -> AnnotationEvent:
    """The current revision of one task (export item or ``GET /api/tasks/{id}`` body).

    Which annotation counts (:func:`choose_annotation`): a ground-truth one if any, else the
    latest one that was not a skip. A task whose every annotation is a skip is SKIPPED; a
    task without annotations (all deleted) is DELETED, so its sample goes away.

    Revision: the later of the task's and the annotation's ``updated_at`` in microseconds.
    Label Studio bumps a task's ``updated_at`` whenever one of its annotations is saved,
    skipped or deleted, so the revision grows with every change and stays equal for an
    unchanged task.

    A region that cannot become mask pixels never vanishes silently: a region without a
    label, an undecodable brush or a rotated image raise :class:`SourceFormatError` with its
    own code; region types with no area (keypoints) or not converted (ellipses) are kept with
    their Label Studio type as geometry type, and validate quarantines them.
    """
    options = options or LabelStudioOptions()
    if not isinstance(task, dict) or "id" not in task:
        raise SourceFormatError("labelstudio.invalid_task", "a task must be an object with an id")
    try:
        return _task_to_event(task, options, project)
    except (ValidationError, KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, SourceFormatError):
            raise
        raise SourceFormatError(
            "labelstudio.invalid_task", f"task {task.get('id')}: cannot read it: {exc}"
        ) from exc


def choose_annotation(annotations: list[dict[str, Any]]) -> tuple[dict[str, Any] | None, Status]:
    """The annotation a task's sample is made from, and the status that follows.

    The rule, for tasks that several annotators labelled:

    1. skips (``was_cancelled``) never count while any annotation is not a skip;
    2. among the rest, one marked ``ground_truth`` wins over any that is not;
    3. among equals, the most recently updated wins (ties: the higher id).

    All skips: the latest skip, SKIPPED. No annotation at all: None, DELETED.
    """
    kept = [a for a in annotations if not a.get("was_cancelled")]
    if kept:
        return max(kept, key=lambda a: (bool(a.get("ground_truth")), *_annotation_order(a))), (
            Status.SUBMITTED
        )
    if annotations:
        return max(annotations, key=_annotation_order), Status.SKIPPED
    return None, Status.DELETED


def _task_to_event(
    task: dict[str, Any], options: LabelStudioOptions, project: int | None
) -> AnnotationEvent:
    annotations = [a for a in task.get("annotations") or [] if isinstance(a, dict)]
    chosen, status = choose_annotation(annotations)
    task_time = parse_time(task.get("updated_at"))
    times = [t for t in (task_time, chosen and parse_time(chosen.get("updated_at"))) if t]
    updated = max(times) if times else None
    if updated is not None:
        revision = revision_of(updated)
    elif chosen is not None:
        revision = int(chosen.get("id") or 0)
    else:
        revision = 0
    results = ((chosen or {}).get("result") or []) if status == Status.SUBMITTED else []
    features = [f for item in results for f in _result_features(item)]
    created = parse_time((chosen or task).get("created_at")) or updated
    return AnnotationEvent(
        source=SOURCE,
        task_id=task_key(project, task, options),
        revision=revision,
        status=status,
        features=features,
        coordinates=CoordSpace.PIXEL,
        image=_image_ref(task, results, options),
        annotator=_annotator(chosen),
        created_at=created or datetime.fromtimestamp(0, UTC),
        updated_at=updated or datetime.fromtimestamp(0, UTC),
    )


def _annotation_order(annotation: dict[str, Any]) -> tuple[datetime, int]:
    when = parse_time(annotation.get("updated_at")) or datetime.fromtimestamp(0, UTC)
    return when, int(annotation.get("id") or 0)


def _annotator(annotation: dict[str, Any] | None) -> str | None:
    who = (annotation or {}).get("completed_by")
    if isinstance(who, dict):
        who = who.get("email") or who.get("id")
    return None if who is None else str(who)


def _image_ref(
    task: dict[str, Any], results: list[dict[str, Any]], options: LabelStudioOptions
) -> ImageRef | None:
    data = task.get("data") or {}
    uri = data.get(options.image_key)
    if not uri:
        return None
    uri = str(uri)
    provider = data.get("provider") or _provider_for(uri, options)
    if provider == "labelstudio" and uri.startswith(CLOUD_SCHEMES):
        uri = presign_path(task["id"], uri)
    sizes = {
        (int(r["original_width"]), int(r["original_height"]))
        for r in results
        if r.get("original_width") and r.get("original_height")
    }
    if len(sizes) > 1:
        raise SourceFormatError(
            "labelstudio.image_size_inconsistent",
            f"the regions were drawn on images of different sizes {sorted(sizes)}",
        )
    width, height = next(iter(sizes)) if sizes else (data.get("width"), data.get("height"))
    bounds, window = data.get(options.bounds_key), data.get(options.window_key)
    return ImageRef(
        provider=provider,
        uri=uri,
        scene_id=data.get("scene_id"),
        bounds=tuple(bounds) if bounds else None,
        bounds_crs=data.get(options.crs_key),
        width=width,
        height=height,
        scene_uri=data.get(options.scene_key),
        window=tuple(window) if window else None,
    )


def _provider_for(uri: str, options: LabelStudioOptions) -> str:
    if options.provider != "auto":
        return options.provider
    served = uri.startswith("/data/") or "://" in uri
    return "labelstudio" if served else "geotiff"


def presign_path(task_id: int, uri: str) -> str:
    """Where Label Studio serves a cloud storage object of a task: a redirect to a presigned
    URL, or the bytes themselves (its editor loads the same path)."""
    fileuri = base64.urlsafe_b64encode(uri.encode()).decode()
    return f"/tasks/{int(task_id)}/presign/?fileuri={fileuri}"


def _result_features(item: dict[str, Any]) -> list[Feature]:
    """Features of one ``result`` item: polygons and rectangles (percent → pixels), brushes
    (RLE → exact pixel polygons). Results that are not regions (choices, text) carry no
    shape and are not features; region types we do not convert keep their Label Studio type
    as geometry type, so validate quarantines them visibly."""
    kind = item.get("type", "")
    value = item.get("value") or {}
    if not kind.endswith("labels"):
        return []
    labels = value.get(kind)
    if not labels:
        raise SourceFormatError(
            "labelstudio.region_unlabelled",
            f"a {kind} region ({item.get('id')}) has no label: it cannot become mask pixels",
        )
    if item.get("image_rotation"):
        raise SourceFormatError(
            "labelstudio.image_rotated",
            f"region {item.get('id')} was drawn on the image rotated by "
            f"{item['image_rotation']}°; its coordinates do not match the image's pixels",
        )
    if kind in _REGION_SHAPES:
        w, h = float(item["original_width"]), float(item["original_height"])
        geometry = _REGION_SHAPES[kind](value, w, h)
    elif kind == "brushlabels":
        geometry = _brush(item, value)
    else:
        geometry = {"type": f"labelstudio:{kind}"}
    return [
        Feature(label=str(label), geometry=geometry, feature_id=item.get("id")) for label in labels
    ]


def _polygon_geometry(value: dict[str, Any], w: float, h: float) -> dict[str, Any]:
    return polygon([[(x * w / 100.0, y * h / 100.0) for x, y in value["points"]]])


def _rectangle(value: dict[str, Any], w: float, h: float) -> dict[str, Any]:
    """Label Studio rotates a rectangle clockwise (y points down) about its top-left corner,
    in pixels, so percent must become pixels before rotating."""
    x, y = value["x"] * w / 100.0, value["y"] * h / 100.0
    rw, rh = value["width"] * w / 100.0, value["height"] * h / 100.0
    theta = math.radians(float(value.get("rotation") or 0.0))
    ux, uy = math.cos(theta), math.sin(theta)
    corners = [(0.0, 0.0), (rw, 0.0), (rw, rh), (0.0, rh)]
    return polygon([[(x + cx * ux - cy * uy, y + cx * uy + cy * ux) for cx, cy in corners]])


_REGION_SHAPES = {"polygonlabels": _polygon_geometry, "rectanglelabels": _rectangle}


def _brush(item: dict[str, Any], value: dict[str, Any]) -> dict[str, Any]:
    width, height = int(item["original_width"]), int(item["original_height"])
    geometry = mask_to_geometry(brush_mask(value, width, height))
    if geometry is None:
        raise SourceFormatError(
            "brush.empty", f"brush region {item.get('id')} paints no pixel ({width}x{height})"
        )
    return geometry


def parse_export(
    tasks: list[dict[str, Any]],
    options: LabelStudioOptions | None = None,
    project: int | None = None,
) -> list[AnnotationEvent]:
    """Events of a Label Studio JSON export (``[task, ...]``), one per task, in file order."""
    if not isinstance(tasks, list):
        raise SourceFormatError("labelstudio.invalid_export", "an export is a list of tasks")
    return [task_to_event(task, options, project) for task in tasks]


def deleted_event(task_id: str, revision: int, when: datetime) -> AnnotationEvent:
    """The event for a task that vanished from Label Studio: a deletion at ``revision``."""
    return AnnotationEvent(
        source=SOURCE,
        task_id=task_id,
        revision=revision,
        status=Status.DELETED,
        created_at=when,
        updated_at=when,
    )


# --- webhooks ----------------------------------------------------------------------------


def parse_webhook(payload: Any, source: str = SOURCE) -> TaskChanged | None:
    """The hint in one webhook body; None for actions that change no label.

    Shapes (Label Studio 1.x): ANNOTATION_CREATED/UPDATED carry ``annotation``, ``task`` and
    ``project`` objects; ANNOTATIONS_DELETED carries ``annotations: [{"id"}]``; TASKS_DELETED
    carries ``tasks: [{"id"}]``; every task/annotation event carries ``project``.
    """
    if not isinstance(payload, dict) or not isinstance(payload.get("action"), str):
        raise SourceFormatError("webhook.invalid", "a webhook body is an object with an action")
    action = payload["action"]
    if action in IGNORED_ACTIONS:
        return None
    if action not in HANDLED_ACTIONS:
        raise SourceFormatError("webhook.unknown_action", f"unknown webhook action {action!r}")
    try:
        project = _project_id(payload)
        if action in ("ANNOTATION_CREATED", "ANNOTATION_UPDATED"):
            task = payload.get("task") or {}
            task_id = task.get("id", (payload.get("annotation") or {}).get("task"))
            return TaskChanged(source=source, project=project, task_ids=(task_id,), action=action)
        if action == "TASKS_DELETED":
            ids = tuple(t["id"] for t in payload["tasks"])
            return TaskChanged(source=source, project=project, task_ids=ids, action=action)
        ids = tuple(a["id"] for a in payload["annotations"])
        return TaskChanged(source=source, project=project, action=action, annotation_ids=ids)
    except (KeyError, TypeError, ValidationError) as exc:
        raise SourceFormatError("webhook.invalid", f"{action}: malformed body: {exc}") from exc


def _project_id(payload: dict[str, Any]) -> int:
    project = payload.get("project")
    if isinstance(project, dict):
        project = project.get("id")
    if project is None:
        project = (payload.get("task") or {}).get("project")
    if not isinstance(project, int) or isinstance(project, bool):
        raise SourceFormatError("webhook.invalid", "the body names no project id")
    return project
