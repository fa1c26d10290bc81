"""The versioned event envelope and its (de)serialization.

Every record value on a pipeline topic is one JSON envelope::

    {"schema": "annotation.revision", "version": 1, "data": {...}}

Why JSON rather than Avro or Protobuf: a record that lands in the dead-letter topic must be
readable by a person with any Kafka tool, and running a schema registry next to a laptop demo is
a cost with no benefit at this scale. What a registry would give us — knowing which shape a
record has — the envelope carries itself: a schema name and an integer version, resolved through
an in-process registry of pydantic models. A new, incompatible shape is a new version; both can
be registered at once, so consumers read old records while producers write new ones.

Decoding never crashes a worker: whatever is wrong with the bytes becomes a
:class:`~labelflow.stage.PermanentError` with a stable code, and the record is dead-lettered.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from labelflow.errors import PermanentError

MAX_EVENT_BYTES = 1024 * 1024
"""Larger values are refused before parsing: one oversized record must not exhaust a worker's
memory (and Kafka's default ``message.max.bytes`` would reject it downstream anyway)."""

M = TypeVar("M", bound=BaseModel)

_MODELS: dict[tuple[str, int], type[BaseModel]] = {}
_SCHEMAS: dict[type[BaseModel], tuple[str, int]] = {}


class Envelope(BaseModel):
    """The wire shape of every event: which schema and version ``data`` follows."""

    model_config = ConfigDict(populate_by_name=True, frozen=True)

    schema_name: str = Field(alias="schema", min_length=1)
    version: int = Field(ge=1)
    data: dict[str, Any]


def register(schema: str, version: int) -> Callable[[type[M]], type[M]]:
    """Class decorator: make a pydantic model the payload of ``schema`` at ``version``."""

    def add(model: type[M]) -> type[M]:
        known = _MODELS.get((schema, version))
        if known is not None and known is not model:
            raise ValueError(f"{schema} v{version} is already {known.__qualname__}")
        _MODELS[(schema, version)] = model
        _SCHEMAS[model] = (schema, version)
        return model

    return add


def schema_of(model: type[BaseModel]) -> tuple[str, int]:
    """The (schema, version) a model is registered as; KeyError if it is not."""
    return _SCHEMAS[model]


def encode(event: BaseModel) -> bytes:
    """Wrap a registered event in its envelope, as compact JSON bytes."""
    schema, version = schema_of(type(event))
    envelope = Envelope(schema=schema, version=version, data=event.model_dump(mode="json"))
    return envelope.model_dump_json(by_alias=True).encode()


def decode(raw: bytes | None) -> BaseModel:
    """The typed event in ``raw``; a :class:`PermanentError` says why when there is none."""
    if raw is None:
        raise PermanentError("event.malformed", "the record has no value (a tombstone?)")
    if len(raw) > MAX_EVENT_BYTES:
        raise PermanentError(
            "event.too_large", f"{len(raw)} bytes is over the {MAX_EVENT_BYTES} byte limit"
        )
    try:
        envelope = Envelope.model_validate_json(raw)
    except ValidationError as exc:
        raise PermanentError("event.malformed", f"not an event envelope: {_first(exc)}") from None
    model = _MODELS.get((envelope.schema_name, envelope.version))
    if model is None:
        raise PermanentError(
            "event.unknown_schema",
            f"no model is registered for {envelope.schema_name} v{envelope.version}",
        )
    try:
        return model.model_validate(envelope.data)
    except ValidationError as exc:
        raise PermanentError(
            "event.malformed",
            f"{envelope.schema_name} v{envelope.version} is invalid: {_first(exc)}",
        ) from None


def _first(exc: ValidationError) -> str:
    """The first validation problem, short enough for a header."""
    error = exc.errors()[0]
    where = ".".join(str(p) for p in error["loc"]) or "value"
    return f"{where}: {error['msg']}"
