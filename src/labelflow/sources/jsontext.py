"""JSON annotation files as they really arrive: byte-order marks, UTF-16 from Windows tools,
duplicate keys, and nesting deep enough to crash a recursive parser.

Python's :mod:`json` parses recursively, so a document nested a few thousand levels deep
raises :class:`RecursionError` instead of a decoding error. For a top-level array (an
export), :func:`load` then splits the array into its elements without recursing and parses
each on its own: an element that is still too deep becomes a :class:`TooDeep` in its place,
and the file's other elements are read as usual. Any other document that deep is refused
whole (``json.too_deep``).

Duplicate keys are legal JSON that parsers resolve differently (the first wins in some, the
last in Python), so a task that has them could mean one thing to Label Studio and another to
us: objects with a duplicate key are marked, and :func:`problem` reports them.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from labelflow.sources.base import SourceFormatError

MAX_DEPTH = 64
"""Deepest nesting a unit (a task, a feature) may have. Real exports stay far below it (a
Label Studio polygon point sits 8 levels into its task); anything near Python's recursion
limit would crash code that walks it later (validation, serialization), not only the parser."""

_STRUCTURE = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{},]')
"""A string (skipped whole, so brackets inside it do not count) or a structural character."""


@dataclass(frozen=True)
class TooDeep:
    """An element of a top-level array nested too deep to parse; ``text`` is its JSON."""

    text: str


class DuplicateKeys(dict[str, Any]):
    """An object in which a key occurred more than once (the last value kept, as json does);
    ``duplicates`` names the repeated keys."""

    duplicates: tuple[str, ...] = ()


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) == len(pairs):
        return obj
    marked = DuplicateKeys(obj)
    seen: set[str] = set()
    repeated: list[str] = []
    for key, _ in pairs:
        if key in seen:
            repeated.append(key)
        seen.add(key)
    marked.duplicates = tuple(repeated)
    return marked


def decode_text(data: bytes, name: str) -> str:
    """The text of a JSON file: UTF-8 with or without a byte-order mark, or UTF-16/32 (which
    RFC 8259 no longer allows but Windows tools still write), told apart as :mod:`json` does."""
    if not data.strip():
        raise SourceFormatError("file.empty", f"{name}: the file is empty")
    encoding = json.detect_encoding(data)
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as exc:
        raise SourceFormatError(
            "file.encoding",
            f"{name}: not valid {encoding} text at byte {exc.start}: {exc.reason}",
            hint="save the file as UTF-8",
        ) from exc


def load(text: str, name: str) -> Any:
    """The parsed document; a top-level array too deep to parse whole comes back as a list in
    which each element too deep to parse is a :class:`TooDeep`."""
    try:
        return json.loads(text, object_pairs_hook=_object)
    except json.JSONDecodeError as exc:
        raise SourceFormatError("format.malformed_json", f"{name}: {exc}") from exc
    except RecursionError:
        pass
    if not text.lstrip().startswith("["):
        raise SourceFormatError(
            "json.too_deep", f"{name}: nested too deep to parse (more than {MAX_DEPTH} levels)"
        )
    out: list[Any] = []
    for element in split_array(text, name):
        try:
            out.append(json.loads(element, object_pairs_hook=_object))
        except RecursionError:
            out.append(TooDeep(element))
        except json.JSONDecodeError as exc:
            raise SourceFormatError("format.malformed_json", f"{name}: {exc}") from exc
    return out


def split_array(text: str, name: str) -> list[str]:
    """The JSON texts of a top-level array's elements, found without recursion."""
    start = text.index("[") + 1
    depth, begin, elements = 0, start, []
    for match in _STRUCTURE.finditer(text, start):
        token = match.group()
        if token in "[{":
            depth += 1
        elif token in "]}":
            if depth == 0:  # the end of the top-level array
                last = text[begin : match.start()].strip()
                if last or elements:
                    elements.append(last)
                if text[match.end() :].strip():
                    raise SourceFormatError(
                        "format.malformed_json", f"{name}: extra data after the top-level array"
                    )
                return elements
            depth -= 1
        elif token == "," and depth == 0:
            elements.append(text[begin : match.start()].strip())
            begin = match.end()
    raise SourceFormatError("format.malformed_json", f"{name}: the top-level array never ends")


def problem(value: Any, limit: int = MAX_DEPTH) -> tuple[str, str] | None:
    """``(code, message)`` when ``value`` is nested deeper than ``limit`` or holds an object
    with a duplicate key; None when it is fine. Walks without recursion."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return "json.too_deep", f"nested more than {limit} levels deep"
        if isinstance(node, DuplicateKeys):
            keys = ", ".join(repr(k) for k in node.duplicates)
            return "json.duplicate_key", f"an object repeats the key(s) {keys}"
        if isinstance(node, dict):
            stack.extend((child, depth + 1) for child in node.values())
        elif isinstance(node, list):
            stack.extend((child, depth + 1) for child in node)
    return None
