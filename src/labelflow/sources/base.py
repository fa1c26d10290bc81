"""What every source shares: its error type and the few conversions all formats need."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from labelflow.errors import PermanentError

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


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


def revision_of(when: datetime) -> int:
    """A revision from a timestamp: microseconds since the epoch.

    Sources rarely carry a revision counter, but they do carry "last modified" times, and
    those only grow for one task. Microseconds keep two saves in the same second apart.
    """
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return (when - EPOCH) // timedelta(microseconds=1)


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
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def closed_ring(points: Sequence[Sequence[float]]) -> list[list[float]]:
    """GeoJSON rings repeat their first position last; most tools' point lists do not."""
    ring = [[float(c) for c in p] for p in points]
    if ring and ring[0] != ring[-1]:
        ring.append(list(ring[0]))
    return ring


def polygon(rings: Sequence[Sequence[Sequence[float]]]) -> dict[str, Any]:
    """A GeoJSON Polygon from point lists, rings closed."""
    return {"type": "Polygon", "coordinates": [closed_ring(r) for r in rings]}
