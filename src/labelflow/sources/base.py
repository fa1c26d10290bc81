"""What every source shares: its error types and the few conversions all formats need."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from labelflow.errors import PermanentError
from labelflow.model import AnnotationEvent, as_utc

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

EXCERPT_CHARS = 2000
"""How much of a refused task is kept for the person fixing it: enough to see what it was,
not enough to copy a multi-megabyte task into every quarantine record."""


class SourceFormatError(PermanentError):
    """A source document that cannot be turned into events at all (as opposed to an event
    with bad content, which becomes an event and is quarantined by the validate stage).

    ``code`` is stable (``format.unknown``, ``coco.rle_unsupported``, ...) so callers and tests
    branch on it rather than on the message; ``hint`` says what to do about it.
    """

    def __init__(self, code: str, message: str, hint: str | None = None) -> None:
        super().__init__(code, message)
        self.hint = hint

    def __str__(self) -> str:
        text = f"{self.code}: {self.message}"
        return text if not self.hint else f"{text}\n  hint: {self.hint}"


@dataclass(frozen=True)
class Refused:
    """One unit of a source document (a task, a feature, an image) that cannot become an
    event. The document's other units still do: one bad task never holds back the rest.

    ``message`` names the unit (its id where it has a readable one, else its position) and
    the field at fault. ``fingerprint`` depends only on the unit's content, so the same bad
    task read again (a file dropped twice, or edited elsewhere) is recognised as known.
    """

    code: str
    message: str
    index: int
    task_id: str | None
    excerpt: str
    fingerprint: str

    @classmethod
    def of(
        cls, code: str, message: str, index: int, unit: Any, task_id: str | None = None
    ) -> Refused:
        """A refusal of ``unit`` (the parsed JSON, or its raw text when it has none)."""
        text = unit if isinstance(unit, str) else canonical_json(unit)
        digest = hashlib.sha256(f"{code}\x1f{text}".encode(errors="replace")).hexdigest()
        return cls(code, message, index, task_id, text[:EXCERPT_CHARS], digest[:32])


Parsed = AnnotationEvent | Refused
"""What one unit of a source document becomes."""


def validation_summary(exc: Exception) -> str:
    """One line for a pydantic error (field: problem), instead of its multi-line report."""
    errors = getattr(exc, "errors", None)
    if not callable(errors):
        return str(exc)
    parts = [
        f"{'.'.join(str(p) for p in e['loc']) or 'value'}: {e['msg']}"
        for e in errors(include_url=False)
    ]
    return "; ".join(parts[:3])


def canonical_json(value: Any) -> str:
    """``value`` as JSON with sorted keys: equal content, equal text."""
    try:
        return json.dumps(value, sort_keys=True, ensure_ascii=False, default=repr)
    except (RecursionError, ValueError, TypeError):
        return repr(value)[: EXCERPT_CHARS * 4]


def is_number(value: Any) -> bool:
    """A JSON number: int or float, and not a bool (which Python counts as an int)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def is_finite(value: Any) -> bool:
    """A number a float can hold that is neither NaN nor infinite (``1e999`` parses as
    infinity, and a 400-digit integer overflows a float)."""
    try:
        return is_number(value) and math.isfinite(float(value))
    except OverflowError:
        return False


def all_finite(value: Any) -> bool:
    """No NaN or infinity anywhere in nested coordinates (an event would carry them as null,
    and a finite percentage can still overflow once scaled to pixels)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, list | tuple):
            stack.extend(item)
        elif is_number(item) and not is_finite(item):
            return False
    return True


def revision_of(when: datetime) -> int:
    """A revision from a timestamp: microseconds since the epoch.

    Sources rarely carry a revision counter, but they do carry "last modified" times, and
    those only grow for one task. Microseconds keep two saves in the same second apart.
    """
    return (as_utc(when) - EPOCH) // timedelta(microseconds=1)


def parse_time(value: Any) -> datetime | None:
    """ISO-8601 text (``Z`` suffix included) to an aware datetime; None for absent values."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        parsed = value
    else:
        try:
            parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError as exc:
            raise SourceFormatError("time.invalid", f"not an ISO-8601 time: {value!r}") from exc
    return as_utc(parsed)


def closed_ring(points: Sequence[Sequence[float]]) -> list[list[float]]:
    """GeoJSON rings repeat their first position last; most tools' point lists do not."""
    ring = [[float(c) for c in p] for p in points]
    if ring and ring[0] != ring[-1]:
        ring.append(list(ring[0]))
    return ring


def polygon(rings: Sequence[Sequence[Sequence[float]]]) -> dict[str, Any]:
    """A GeoJSON Polygon from point lists, rings closed."""
    return {"type": "Polygon", "coordinates": [closed_ring(r) for r in rings]}
