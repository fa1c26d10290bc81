"""The bad-file corpus (``tests/fixtures/bad_inputs/files.json``) and how a case becomes the
bytes of the file a person would drop into ``labelflow ingest``."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

CORPUS = Path(__file__).parent / "fixtures" / "bad_inputs" / "files.json"
SPEC: dict[str, Any] = json.loads(CORPUS.read_text())
CASES: list[dict[str, Any]] = SPEC["cases"]

UNITS = 3
"""Every case file holds three units (tasks, features of three tasks, images); the middle one
is the case's."""


def _step(key: str) -> str | int:
    return int(key) if key.isdigit() else key


def set_path(doc: Any, path: str, value: Any) -> None:
    *parents, last = [_step(k) for k in path.split("/")]
    for key in parents:
        doc = doc[key]
    if isinstance(doc, list) and last == len(doc):
        doc.append(value)
    else:
        doc[last] = value


def delete_path(doc: Any, path: str) -> None:
    *parents, last = [_step(k) for k in path.split("/")]
    for key in parents:
        doc = doc[key]
    del doc[last]


def _changed(base: Any, case: dict[str, Any]) -> Any:
    unit = copy.deepcopy(base)
    for path, value in case.get("set", {}).items():
        set_path(unit, path, value)
    for path in case.get("delete", []):
        delete_path(unit, path)
    generate = case.get("generate", {})
    if "pad" in generate:
        set_path(unit, generate["pad"]["path"], "x" * generate["pad"]["bytes"])
    if "circle" in generate:
        n = generate["circle"]["points"]
        ring = [
            [50 + 40 * math.cos(2 * math.pi * i / n), 50 + 40 * math.sin(2 * math.pi * i / n)]
            for i in range(n)
        ]
        set_path(unit, generate["circle"]["path"], ring)
    if "brush_rle" in generate:
        brush = generate["brush_rle"]
        set_path(unit, brush["path"], brush_rle(brush["width"], brush["height"], brush["square"]))
    return unit


def _text(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _unit_text(base: Any, case: dict[str, Any]) -> str:
    if "raw_unit" in case:
        return case["raw_unit"]
    text = _text(case["unit"]) if "unit" in case else _text(_changed(base, case))
    depth = case.get("generate", {}).get("nest_in_data")
    if depth:
        text = text.replace('"data": {', f'"data": {{"meta": {"[" * depth}{"]" * depth}, ', 1)
    return text


def labelstudio_export(case: dict[str, Any] | None = None) -> str:
    """Three tasks (ids 1, 2, 3); the middle one is the case's."""
    task = SPEC["labelstudio_task"]
    first = _text({**task, "id": 1})
    last = _text({**task, "id": 3})
    middle = _unit_text(task, case) if case else _text(task)
    return f"[{first}, {middle}, {last}]"


def geojson_collection(case: dict[str, Any]) -> str:
    """Three tasks, one feature each; the middle feature (task ``tile-b``) is the case's."""
    feature = SPEC["geojson_feature"]
    first = _text(_renamed(feature, "a"))
    last = _text(_renamed(feature, "c"))
    return (
        '{"type": "FeatureCollection", "features": '
        f"[{first}, {_unit_text(feature, case)}, {last}]}}"
    )


def _renamed(feature: dict[str, Any], name: str) -> dict[str, Any]:
    properties = {**feature["properties"], "task_id": f"tile-{name}"}
    return {**feature, "id": f"f-{name}", "properties": properties}


def coco_document(case: dict[str, Any]) -> str:
    return case["raw"] if "raw" in case else _text(_changed(SPEC["coco"], case))


def build(case: dict[str, Any]) -> bytes:
    """The bytes of the file of ``case``."""
    if "raw_hex" in case:
        return bytes.fromhex(case["raw_hex"])
    if case["name"].startswith("file.") and "raw" in case:
        return case["raw"].encode()
    generate = case.get("generate", {})
    if "nested_object" in generate:
        depth = generate["nested_object"]
        return ('{"a": ' * depth + "1" + "}" * depth).encode()
    if "nested_list" in generate:
        depth = generate["nested_list"]
        text = "[" + "[" * depth + "]" * depth + "]"
        return text[: len(text) - generate.get("cut_end", 0)].encode()
    if case["name"].startswith("geojson."):
        return geojson_collection(case).encode()
    if case["name"].startswith("coco."):
        return coco_document(case).encode()
    if case["name"].startswith("labelstudio."):
        return labelstudio_export(case).encode()
    text = labelstudio_export()
    if generate.get("single_task"):
        text = _text(SPEC["labelstudio_task"])
    if "truncate" in generate:
        text = text[: int(len(text) * generate["truncate"])]
    if generate.get("crlf"):
        text = json.dumps(json.loads(text), indent=2).replace("\n", "\r\n")
    return text.encode(generate.get("encoding", "utf-8"))


def brush_rle(width: int, height: int, square: int) -> list[int]:
    """Label Studio's brush RLE of a ``width`` x ``height`` RGBA canvas with an opaque square
    of side ``square`` at its top-left corner, every value in runs (see
    :mod:`labelflow.sources.labelstudio_brush` for the format)."""
    rgba = np.zeros((height, width, 4), np.uint8)
    rgba[:square, :square] = 255
    values = rgba.ravel()
    bits: list[int] = []

    def put(value: int, width_bits: int) -> None:
        bits.extend((value >> (width_bits - 1 - i)) & 1 for i in range(width_bits))

    put(values.size, 32)
    put(7, 5)  # 8-bit values
    for _ in range(4):
        put(15, 4)  # every length class 16 bits wide
    start = 0
    while start < values.size:
        end = start + 1
        while end < values.size and values[end] == values[start] and end - start < 1 << 16:
            end += 1
        put(1, 1)  # a run
        put(0, 2)  # length class 0
        put(end - start - 1, 16)
        put(int(values[start]), 8)
        start = end
    bits.extend([0] * (-len(bits) % 8))
    return [int(b) for b in np.packbits(np.array(bits, np.uint8))]
