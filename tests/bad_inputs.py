"""The bad-input corpus (``tests/fixtures/bad_inputs/cases.json``) and how a case becomes the
bytes a source would deliver; shared by the rule tests and the pipeline tests."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

CORPUS = Path(__file__).parent / "fixtures" / "bad_inputs" / "cases.json"
SPEC: dict[str, Any] = json.loads(CORPUS.read_text())
VALIDATE = [c for c in SPEC["bad"] if c["stage"] == "validate"]
MATERIALIZE = [c for c in SPEC["bad"] if c["stage"] == "materialize"]


def build(case: dict[str, Any]) -> bytes:
    """The payload of ``case``: its raw bytes, or the base event patched, pruned or grown."""
    if "raw" in case:
        return case["raw"].encode()
    if "raw_hex" in case:
        return bytes.fromhex(case["raw_hex"].replace(" ", ""))
    event = {**SPEC["base"], **case.get("patch", {})}
    for key in case.get("remove", []):
        del event[key]
    generate = case.get("generate", {})
    if "nesting_depth" in generate:
        depth = generate["nesting_depth"]
        return ('{"source": ' + "[" * depth + "]" * depth + "}").encode()
    if "pad_annotator_bytes" in generate:
        event["annotator"] = "x" * generate["pad_annotator_bytes"]
    if "circle_vertices" in generate:
        n = generate["circle_vertices"]
        ring = [
            [128 + 100 * math.cos(2 * math.pi * i / n), 128 + 100 * math.sin(2 * math.pi * i / n)]
            for i in range(n)
        ]
        event["features"] = [
            {"label": "water", "geometry": {"type": "Polygon", "coordinates": [[*ring, ring[0]]]}}
        ]
    if "feature_count" in generate:
        square = {"type": "Polygon", "coordinates": [[[1, 1], [5, 1], [5, 5], [1, 5], [1, 1]]]}
        event["features"] = [{"label": "tree", "geometry": square}] * generate["feature_count"]
    return json.dumps(event).encode()
