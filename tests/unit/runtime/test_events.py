"""The event envelope: round trips, and every way bytes can be unusable is a PermanentError."""

from __future__ import annotations

import json

import pytest
from pydantic import BaseModel

from labelflow.events import MAX_EVENT_BYTES, decode, encode, register
from labelflow.stage import PermanentError


@register("unit.point", 1)
class Point(BaseModel):
    x: int
    y: int


def test_an_event_round_trips_through_its_envelope() -> None:
    raw = encode(Point(x=1, y=2))
    assert json.loads(raw) == {"schema": "unit.point", "version": 1, "data": {"x": 1, "y": 2}}
    assert decode(raw) == Point(x=1, y=2)


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (None, "event.malformed"),
        (b"\xff\x00", "event.malformed"),
        (b'{"schema": "unit.point"}', "event.malformed"),
        (b'{"schema": "unit.point", "version": 1, "data": {"x": "a"}}', "event.malformed"),
        (b'{"schema": "unit.point", "version": 2, "data": {}}', "event.unknown_schema"),
        (b" " * (MAX_EVENT_BYTES + 1), "event.too_large"),
    ],
)
def test_unusable_bytes_are_a_permanent_error_with_a_code(raw: bytes | None, code: str) -> None:
    with pytest.raises(PermanentError) as caught:
        decode(raw)
    assert caught.value.code == code
    assert caught.value.message


def test_a_schema_version_cannot_be_claimed_by_two_models() -> None:
    with pytest.raises(ValueError, match=r"unit\.point v1"):

        @register("unit.point", 1)
        class Other(BaseModel):
            x: int
