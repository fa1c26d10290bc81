"""Label Studio JSON exports, one task at a time.

An export is a list of tasks written by Label Studio, or by a script, or edited by hand. Each
task is checked and converted on its own (:func:`labelflow.sources.labelstudio.task_to_event`
does the conversion): a task that cannot become an event is a :class:`Refused` with a code of
its own and a message naming the task and the field, and the other tasks go on.

The checks close the ways a malformed task used to turn into something else than a refusal:

- *a deletion*: ``annotations`` that is missing, null or not a list, an annotation that is
  not an object, a ``was_cancelled`` that is not a boolean (``"false"`` is truthy). Only
  ``"annotations": []`` (every annotation deleted) or all-skipped annotations remove a sample;
- *labels silently dropped*: a result that is not an object, has no type or one Label Studio
  does not have, a region without a label (an empty label list, or a shape tool used without
  its labels), a ``result`` that is missing or not a list;
- *a wrong shape*: a rectangle with a negative width or height (it would be stored mirrored),
  a polygon the annotator never closed (``"closed": false``),
  coordinates that are text, booleans, NaN or infinite (``geometry.non_finite``, as in the
  validate stage), image sizes that are not positive numbers;
- *a wrong task*: an id that is not a non-negative integer, a task data id that is not a
  short printable string, one task id twice in a file with different content.

Region types Label Studio has but labelflow does not rasterize (ellipses, keypoints) are not
refused here: they become events whose shapes validate quarantines, as on the live path.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from labelflow.model import AnnotationEvent
from labelflow.sources import jsontext
from labelflow.sources.base import (
    Parsed,
    Refused,
    SourceFormatError,
    all_finite,
    is_finite,
    is_number,
    parse_time,
)
from labelflow.sources.labelstudio import (
    LabelStudioOptions,
    choose_annotation,
    task_key,
    task_to_event,
)

CONVERTED_REGIONS = ("polygonlabels", "rectanglelabels", "brushlabels")
KEPT_REGIONS = ("ellipselabels", "keypointlabels")
"""Regions with labels that are not turned into polygons: validate quarantines their shapes."""
SHAPE_TOOLS = ("polygon", "rectangle", "brush", "ellipse", "keypoint")
"""A shape drawn with the bare tool carries no label: it cannot become mask pixels."""
NOT_REGIONS = (
    "choices",
    "textarea",
    "rating",
    "taxonomy",
    "number",
    "datetime",
    "relation",
    "pairwise",
    "ranker",
)
"""Per-task answers with no shape (is it cloudy, a comment): not labels of pixels."""

PROVIDERS = ("geotiff", "xyz", "synthetic", "labelstudio")
MAX_ID_CHARS = 512
MAX_INT_ID = 2**63 - 1
"""Label Studio's ids are 64-bit database keys; a larger number is not one of its tasks."""


class _Bad(Exception):
    """One thing wrong with a task: a code, the field, and what is wrong with it."""

    def __init__(self, code: str, field: str, problem: str) -> None:
        super().__init__(problem)
        self.code = code
        self.field = field
        self.problem = problem


def parse_tasks(
    tasks: list[Any], options: LabelStudioOptions | None = None, project: int | None = None
) -> list[Parsed]:
    """One event or one refusal per task, in file order.

    Two tasks of a file with the same task id and revision but different content contradict
    each other; the later ones are refused (``labelstudio.task_id_duplicate``). Equal ones
    are the same event twice, which downstream dedup absorbs.
    """
    options = options or LabelStudioOptions()
    out: list[Parsed] = []
    seen: dict[tuple[str, int], tuple[int, AnnotationEvent]] = {}
    for index, task in enumerate(tasks):
        parsed = parse_task(task, index, options, project)
        if isinstance(parsed, AnnotationEvent):
            first = seen.setdefault((parsed.task_id, parsed.revision), (index, parsed))
            if first[1] is not parsed and first[1] != parsed:
                parsed = Refused.of(
                    "labelstudio.task_id_duplicate",
                    f"{_name(task, index)}: id: task {parsed.task_id!r} at revision "
                    f"{parsed.revision} is also task #{first[0]} of this file, with other "
                    "content; which one is meant cannot be told",
                    index,
                    task,
                    parsed.task_id,
                )
        out.append(parsed)
    return out


def parse_task(
    task: Any, index: int, options: LabelStudioOptions, project: int | None = None
) -> Parsed:
    """The event of one export task, or why it cannot be one."""
    if isinstance(task, jsontext.TooDeep):
        return Refused.of(
            "json.too_deep",
            f"task #{index}: nested too deep to parse (more than {jsontext.MAX_DEPTH} levels)",
            index,
            task.text,
        )
    name = _name(task, index)
    try:
        _check_task(task, options, project)
        event = task_to_event(task, options, project)
        _check_event(event)
    except _Bad as bad:
        field = f"{bad.field}: " if bad.field else ""
        return Refused.of(
            bad.code, f"{name}: {field}{bad.problem}", index, task, _key(task, options, project)
        )
    except SourceFormatError as exc:
        return Refused.of(
            exc.code, f"{name}: {exc.message}", index, task, _key(task, options, project)
        )
    except RecursionError:
        return Refused.of("json.too_deep", f"{name}: nested too deep to read", index, task)
    except Exception as exc:  # noqa: BLE001 - one unforeseen task must not stop the file
        return Refused.of(
            "labelstudio.invalid_task",
            f"{name}: cannot read it: {type(exc).__name__}: {exc}",
            index,
            task,
            _key(task, options, project),
        )
    return event


def _name(task: Any, index: int) -> str:
    """How messages name a task: its id when it has a sane one, always its position."""
    task_id = task.get("id") if isinstance(task, dict) else None
    if _is_int(task_id):
        return f"task {task_id} (#{index})"
    return f"task #{index}"


def _key(task: Any, options: LabelStudioOptions, project: int | None) -> str | None:
    try:
        return task_key(project, task, options)
    except (AttributeError, KeyError, TypeError):
        return None


# --- the checks ----------------------------------------------------------------------------


def _check_task(task: Any, options: LabelStudioOptions, project: int | None) -> None:
    if not isinstance(task, dict):
        raise _Bad("labelstudio.task_not_object", "", f"a task is an object, not {_kind(task)}")
    found = jsontext.problem(task)
    if found is not None:
        raise _Bad(found[0], "", found[1])
    _check_id(task)
    if project is None and task.get("project") is not None and not _is_int(task["project"]):
        raise _Bad(
            "labelstudio.project_invalid",
            "project",
            f"{_show(task['project'])} is not a project id (a non-negative integer)",
        )
    data = task.get("data")
    if not isinstance(data, dict):
        problem = "is missing" if data is None else f"is {_kind(data)}, not an object"
        raise _Bad("labelstudio.data_invalid", "data", f"the task data {problem}")
    _check_data(data, options)
    for field in ("created_at", "updated_at"):
        _check_time(task, field, field)
    annotations = task.get("annotations")
    if not isinstance(annotations, list):
        problem = "is missing" if annotations is None else f"is {_kind(annotations)}"
        raise _Bad(
            "labelstudio.annotations_invalid",
            "annotations",
            f"{problem}, not a list (an empty list is what says every annotation was deleted)",
        )
    for i, annotation in enumerate(annotations):
        _check_annotation(annotation, f"annotations[{i}]")
    chosen, _status = choose_annotation(annotations)
    if chosen is not None and not chosen.get("was_cancelled"):
        at = f"annotations[{annotations.index(chosen)}]"
        results = chosen.get("result")
        if not isinstance(results, list):
            problem = "is missing" if results is None else f"is {_kind(results)}"
            raise _Bad(
                "labelstudio.result_invalid",
                f"{at}.result",
                f"{problem}, not a list of regions (an empty list means nothing to label)",
            )
        for j, item in enumerate(results):
            _check_result(item, f"{at}.result[{j}]")


def _check_id(task: dict[str, Any]) -> None:
    if task.get("id") is None:
        raise _Bad("labelstudio.task_id_missing", "id", "the task has no id")
    if not _is_int(task["id"]):
        raise _Bad(
            "labelstudio.task_id_invalid",
            "id",
            f"{_show(task['id'])} is not a task id (a non-negative integer)",
        )


def _check_data(data: dict[str, Any], options: LabelStudioOptions) -> None:
    own = data.get(options.id_key)
    if own not in (None, ""):
        if not (isinstance(own, str) or _is_int(own)):
            raise _Bad(
                "labelstudio.task_id_invalid",
                f"data.{options.id_key}",
                f"{_show(own)} is not an id (text or a non-negative integer)",
            )
        text = str(own)
        if len(text) > MAX_ID_CHARS:
            raise _Bad(
                "labelstudio.task_id_invalid",
                f"data.{options.id_key}",
                f"{len(text)} characters; an id has at most {MAX_ID_CHARS}",
            )
        if any(ord(c) < 32 or ord(c) == 127 for c in text):
            raise _Bad(
                "labelstudio.task_id_invalid",
                f"data.{options.id_key}",
                f"{_show(text)} holds control characters",
            )
    image = data.get(options.image_key)
    if image is not None and not isinstance(image, str):
        raise _Bad(
            "labelstudio.image_invalid",
            f"data.{options.image_key}",
            f"{_show(image)} is not an image path or URL",
        )
    provider = data.get("provider")
    if provider is not None and provider not in PROVIDERS:
        raise _Bad(
            "labelstudio.image_invalid",
            "data.provider",
            f"{_show(provider)} is not one of {', '.join(PROVIDERS)}",
        )
    if data.get("scene_id") is not None and not isinstance(data["scene_id"], str):
        raise _Bad("labelstudio.image_invalid", "data.scene_id", "a scene id is text")
    for key in ("width", "height"):
        if data.get(key) is not None and not (_is_int(data[key]) and data[key] > 0):
            raise _Bad(
                "labelstudio.image_size_invalid",
                f"data.{key}",
                f"{_show(data[key])} is not a size in pixels",
            )
    _check_georeference(data, options)


def _check_georeference(data: dict[str, Any], options: LabelStudioOptions) -> None:
    bounds = data.get(options.bounds_key)
    if bounds not in (None, []) and not _is_bounds(bounds):
        raise _Bad(
            "labelstudio.georeference_invalid",
            f"data.{options.bounds_key}",
            f"{_show(bounds)} is not [minx, miny, maxx, maxy] with min < max",
        )
    window = data.get(options.window_key)
    if window not in (None, []) and not _is_window(window):
        raise _Bad(
            "labelstudio.georeference_invalid",
            f"data.{options.window_key}",
            f"{_show(window)} is not [col_off, row_off, width, height] in whole pixels",
        )
    for key in (options.crs_key, options.scene_key):
        value = data.get(key)
        if value is not None and not (isinstance(value, str) and value):
            raise _Bad(
                "labelstudio.georeference_invalid", f"data.{key}", f"{_show(value)} is not text"
            )


def _is_bounds(value: Any) -> bool:
    return (
        isinstance(value, list)
        and len(value) == 4
        and all(is_finite(b) for b in value)
        and value[0] < value[2]
        and value[1] < value[3]
    )


def _is_window(value: Any) -> bool:
    return (
        isinstance(value, list)
        and len(value) == 4
        and all(isinstance(w, int) and not isinstance(w, bool) for w in value)
        and value[2] > 0
        and value[3] > 0
    )


def _check_time(obj: dict[str, Any], key: str, field: str) -> None:
    value = obj.get(key)
    if value is None:
        return
    if not isinstance(value, str):
        raise _Bad("time.invalid", field, f"{_show(value)} is not an ISO-8601 time")
    try:
        parse_time(value)
    except SourceFormatError as exc:
        raise _Bad("time.invalid", field, f"{_show(value)} is not an ISO-8601 time") from exc


def _check_annotation(annotation: Any, at: str) -> None:
    if not isinstance(annotation, dict):
        raise _Bad(
            "labelstudio.annotation_invalid",
            at,
            f"an annotation is an object, not {_kind(annotation)}",
        )
    if annotation.get("id") is not None and not _is_int(annotation["id"]):
        raise _Bad(
            "labelstudio.annotation_invalid",
            f"{at}.id",
            f"{_show(annotation['id'])} is not an annotation id (a non-negative integer)",
        )
    for flag in ("was_cancelled", "ground_truth"):
        value = annotation.get(flag)
        if value is not None and not isinstance(value, bool):
            raise _Bad(
                "labelstudio.annotation_invalid",
                f"{at}.{flag}",
                f"{_show(value)} is not true or false",
            )
    for key in ("created_at", "updated_at"):
        _check_time(annotation, key, f"{at}.{key}")


def _check_result(item: Any, at: str) -> None:
    if not isinstance(item, dict):
        raise _Bad("labelstudio.result_invalid", at, f"a region is an object, not {_kind(item)}")
    kind = item.get("type")
    if not isinstance(kind, str) or not kind:
        raise _Bad(
            "labelstudio.result_invalid", f"{at}.type", f"{_show(kind)} is not a result type"
        )
    if kind in NOT_REGIONS:
        return
    if kind in SHAPE_TOOLS:
        raise _Bad(
            "labelstudio.region_unlabelled",
            f"{at}.type",
            f"a {kind} drawn without a label cannot become mask pixels",
        )
    if kind not in CONVERTED_REGIONS + KEPT_REGIONS:
        raise _Bad(
            "labelstudio.result_type_unknown",
            f"{at}.type",
            f"{kind!r} is not a Label Studio result type labelflow knows; its labels would be lost",
        )
    value = item.get("value")
    if not isinstance(value, dict):
        raise _Bad("labelstudio.value_invalid", f"{at}.value", f"is {_kind(value)}, not an object")
    labels = value.get(kind)
    if labels is None or labels == []:
        raise _Bad(
            "labelstudio.region_unlabelled",
            f"{at}.value.{kind}",
            "the region has no label: it cannot become mask pixels",
        )
    if not isinstance(labels, list) or not all(isinstance(lb, str) and lb for lb in labels):
        raise _Bad(
            "labelstudio.label_invalid",
            f"{at}.value.{kind}",
            f"{_show(labels)} is not a list of class names",
        )
    if kind in KEPT_REGIONS:
        return
    for key in ("original_width", "original_height"):
        size = item.get(key)
        if not (is_finite(size) and size > 0):
            problem = "is missing" if size is None else f"{_show(size)} is not a size in pixels"
            raise _Bad("labelstudio.image_size_invalid", f"{at}.{key}", problem)
    _SHAPE_CHECKS.get(kind, _no_check)(value, f"{at}.value")


def _check_points(value: dict[str, Any], at: str) -> None:
    points = value.get("points")
    if not isinstance(points, list) or not all(
        isinstance(p, list) and len(p) == 2 and all(is_number(c) for c in p) for p in points
    ):
        raise _Bad(
            "labelstudio.value_invalid", f"{at}.points", "points are a list of [x, y] numbers"
        )
    if not all(is_finite(c) for p in points for c in p):
        raise _Bad("geometry.non_finite", f"{at}.points", "a coordinate is NaN or infinite")
    if value.get("closed") is False:
        raise _Bad(
            "labelstudio.polygon_open",
            f"{at}.closed",
            "the polygon was never closed in the editor: its outline is unfinished",
        )


def _check_rectangle(value: dict[str, Any], at: str) -> None:
    for key in ("x", "y", "width", "height", "rotation"):
        number = value.get(key)
        if number is None and key == "rotation":
            continue
        if not is_number(number):
            problem = "is missing" if number is None else f"{_show(number)} is not a number"
            raise _Bad("labelstudio.value_invalid", f"{at}.{key}", problem)
        if not is_finite(number):
            raise _Bad("geometry.non_finite", f"{at}.{key}", f"{number} is not a finite number")
    for key in ("width", "height"):
        if value[key] < 0:
            raise _Bad(
                "geometry.negative_extent",
                f"{at}.{key}",
                f"{value[key]} is negative: a rectangle cannot be drawn inside out",
            )


def _no_check(_value: dict[str, Any], _at: str) -> None:
    """Brushes are checked as they are decoded (``brush.*`` codes)."""


_SHAPE_CHECKS: dict[str, Callable[[dict[str, Any], str], None]] = {
    "polygonlabels": _check_points,
    "rectanglelabels": _check_rectangle,
}


def _check_event(event: AnnotationEvent) -> None:
    """Finite numbers in percent can still overflow to infinity once scaled to pixels."""
    for i, feature in enumerate(event.features):
        if not all_finite(feature.geometry.get("coordinates")):
            raise _Bad(
                "geometry.non_finite",
                f"region {feature.feature_id or i}",
                "a coordinate overflows to infinity in pixels",
            )


# --- helpers -------------------------------------------------------------------------------


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_INT_ID


def _kind(value: Any) -> str:
    names = {
        dict: "an object",
        list: "a list",
        str: "text",
        bool: "a boolean",
        int: "a number",
        float: "a number",
    }
    if value is None:
        return "null"
    return names.get(type(value), f"a {type(value).__name__}")


def _show(value: Any) -> str:
    """A value for a message: short, and with no control characters to garble a terminal."""
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:57]}..."
