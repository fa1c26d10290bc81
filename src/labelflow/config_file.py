"""Writing settings into ``labelflow.toml`` (the file :class:`~labelflow.config.Settings` reads).

Commands that set something up for good (``labelflow source add``) merge their keys into the
file rather than asking people to edit it: the file is read, the keys are replaced or added,
and the whole file is written back — so comments in it are not kept. Its mode is 0600, since
it may hold tokens.
"""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path
from typing import Any

from labelflow.errors import LabelflowError


def update_config_file(path: Path, updates: dict[str, Any]) -> None:
    """Merge ``updates`` into the TOML file at ``path`` (tables merged key by key)."""
    current: dict[str, Any] = {}
    if path.exists():
        try:
            current = tomllib.loads(path.read_text())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise LabelflowError(
                f"{path} is not valid TOML: {exc}", hint="fix or move the file, then run again"
            ) from exc
    merged = _merge(current, updates)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(dumps(merged))
    os.chmod(temporary, 0o600)
    temporary.replace(path)  # atomic: a reader sees the old file or the new one


def _merge(base: dict[str, Any], updates: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in updates.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            # A table given in full replaces the old one's keys one level down only where
            # the update is itself a table: [taxonomy.classes] is replaced whole.
            out[key] = {**out[key], **value}
        else:
            out[key] = value
    return out


def dumps(doc: dict[str, Any]) -> str:
    """TOML for the values settings use: strings, numbers, booleans, lists, nested tables."""
    lines: list[str] = []
    _table(doc, [], lines)
    return "\n".join(lines).strip() + "\n"


def _table(table: dict[str, Any], name: list[str], lines: list[str]) -> None:
    scalars = {k: v for k, v in table.items() if not isinstance(v, dict)}
    tables = {k: v for k, v in table.items() if isinstance(v, dict)}
    if name and (scalars or not tables):
        lines.append(f"\n[{'.'.join(_key(n) for n in name)}]")
    for key, value in scalars.items():
        lines.append(f"{_key(key)} = {_value(value)}")
    for key, value in tables.items():
        _table(value, [*name, key], lines)


def _key(key: str) -> str:
    bare = key.replace("_", "").replace("-", "").isalnum() and key.isascii()
    return key if bare else json.dumps(key)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        # A JSON string is a TOML basic string, once characters outside the BMP stay literal
        # (JSON would write surrogate pairs) and DEL is escaped (TOML forbids it bare).
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")
