"""Snapshots on disk: one immutable directory per name under ``<data dir>/snapshots``.

A snapshot directory holds ``manifest.parquet`` (the exact sample versions and their splits),
``diff.parquet`` (the changes from its parent) and ``snapshot.json`` (:class:`SnapshotMeta`:
parent, diff counts, stats, gate results, rules, code version, catalog state, and the sha256
of the two Parquet files). Nothing in it is ever modified: its files are made read-only, a
name is never reused, and there is no delete command.

Creating one (:meth:`SnapshotStore.create`):

1. Refuse a name that is malformed or taken.
2. Read the manifest and the catalog state in one read transaction.
3. Assign splits; compute stats; diff against the parent (the newest snapshot unless named).
4. Evaluate the gates; refuse with every failed gate's reason unless forced (an override is
   recorded in the metadata, with the gates it overrode).
5. Write the files into a hidden temporary directory beside the others and fsync them.
6. Rename it onto the name. The rename is atomic and fails if the name exists, so a crash
   at any step leaves either no snapshot or a whole one (a leftover temporary directory is
   invisible and swept later), and of two concurrent creates of one name exactly one wins.
7. Fsync the parent directory, so the new name survives a power loss.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Literal, Self

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, Field

from labelflow import __version__
from labelflow.catalog.blobs import _fsync_path
from labelflow.catalog.store import Catalog
from labelflow.config import Settings
from labelflow.errors import LabelflowError
from labelflow.model import utcnow
from labelflow.snapshots import diff as diffs
from labelflow.snapshots.gates import GateResult, evaluate
from labelflow.snapshots.manifest import CatalogState, Stats, read_catalog, stats, with_splits
from labelflow.snapshots.settings import SnapshotSettings

NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
MANIFEST = "manifest.parquet"
DIFF = "diff.parquet"
META = "snapshot.json"
TEMP_PREFIX = ".tmp-"
STALE_TEMP_S = 3600.0
"""A temporary directory older than this was left by a killed create: a live create writes
its files in seconds, so sweeping older ones never removes one still being written."""

READ_ONLY = stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH


class SnapshotError(LabelflowError):
    """A snapshot that cannot be made, found or read."""


class SnapshotRefused(SnapshotError):
    """A quality gate failed; ``gates`` holds every result, the failed ones with reasons."""

    def __init__(self, name: str, gates: list[GateResult]) -> None:
        failed = [g for g in gates if g.failed]
        reasons = "; ".join(f"{g.code}: {g.message}" for g in failed)
        super().__init__(
            f"snapshot {name!r} refused by its quality gates: {reasons}",
            hint="fix the data, change the rules in settings.snapshots.gates, or pass --force "
            "(recorded in the snapshot)",
        )
        self.gates = gates
        self.failed = failed


class SnapshotMeta(BaseModel):
    """``snapshot.json``: everything about a snapshot except its rows."""

    format: Literal[1] = 1
    name: str
    created_at: datetime
    parent: str | None
    code_version: str
    catalog: CatalogState
    stats: Stats
    diff: dict[str, int] | None = Field(description="Changes from the parent, by kind.")
    gates: list[GateResult]
    forced: bool = False
    overridden: list[str] = Field(
        default_factory=list, description="Codes of the failed gates --force overrode."
    )
    rules: SnapshotSettings
    taxonomy: dict[str, int]
    files: dict[str, str] = Field(description="File name → sha256 of its bytes.")


class Snapshot:
    """One snapshot directory, opened read-only."""

    def __init__(self, path: Path, meta: SnapshotMeta) -> None:
        self.path = path
        self.meta = meta

    @property
    def name(self) -> str:
        return self.meta.name

    def manifest(self, columns: list[str] | None = None, sample_id: str | None = None) -> pa.Table:
        """The manifest's ``columns``; with ``sample_id``, only its row (the filter is pushed
        into the Parquet reader, so one sample costs no read of the whole manifest)."""
        filters = None if sample_id is None else [("sample_id", "=", sample_id)]
        return pq.read_table(self.path / MANIFEST, columns=columns, filters=filters)

    def changes(self) -> pa.Table:
        """The diff to the parent (empty without one)."""
        return pq.read_table(self.path / DIFF)

    def verify(self) -> list[str]:
        """Files whose bytes no longer match the hash recorded at creation (none, normally)."""
        return [f for f, h in self.meta.files.items() if _sha256(self.path / f) != h]


class SnapshotStore:
    """The snapshots under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    @classmethod
    def from_settings(cls, settings: Settings) -> Self:
        return cls(settings.data_dir / "snapshots")

    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(
            p.name for p in self.root.iterdir() if not p.name.startswith(".") and p.is_dir()
        )

    def list(self) -> list[Snapshot]:
        """Every snapshot, oldest first."""
        found = [self.open(n) for n in self.names()]
        return sorted(found, key=lambda s: (s.meta.created_at, s.name))

    def open(self, name: str) -> Snapshot:
        path = self.root / name
        if not NAME_PATTERN.fullmatch(name) or not (path / META).is_file():
            raise SnapshotError(f"no snapshot {name!r}", hint="see: labelflow snapshot list")
        return Snapshot(path, SnapshotMeta.model_validate_json((path / META).read_bytes()))

    def latest(self) -> Snapshot | None:
        found = self.list()
        return found[-1] if found else None

    def create(
        self,
        name: str,
        catalog: Catalog,
        settings: Settings,
        *,
        force: bool = False,
        parent: str | None = None,
    ) -> Snapshot:
        """Publish the catalog's current samples as snapshot ``name`` (see the module doc)."""
        # 1.
        self._check_name(name)
        parent_snapshot = self.open(parent) if parent is not None else self.latest()
        # 2.
        table, state = read_catalog(catalog)
        # 3.
        rules = settings.snapshots
        table = with_splits(table, rules.splits)
        classes = sorted(settings.taxonomy.classes)
        current = stats(table, classes)
        if parent_snapshot is not None:
            changes = diffs.diff(parent_snapshot.manifest(diffs.DIFF_INPUT), table)
        else:
            changes = diffs.DIFF_SCHEMA.empty_table()
        # 4.
        gates = evaluate(
            current, parent_snapshot.meta.stats if parent_snapshot else None, classes, rules.gates
        )
        failed = [g.code for g in gates if g.failed]
        if failed and not force:
            raise SnapshotRefused(name, gates)
        # 5.
        self.root.mkdir(parents=True, exist_ok=True)
        self._sweep()
        tmp = Path(tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{name}-", dir=self.root))
        try:
            files = {
                MANIFEST: _write_parquet(tmp / MANIFEST, table),
                DIFF: _write_parquet(tmp / DIFF, changes),
            }
            meta = SnapshotMeta(
                name=name,
                created_at=utcnow(),
                parent=parent_snapshot.name if parent_snapshot else None,
                code_version=__version__,
                catalog=state,
                stats=current,
                diff=diffs.summary(changes) if parent_snapshot else None,
                gates=gates,
                forced=bool(failed),
                overridden=failed,
                rules=rules,
                taxonomy=dict(settings.taxonomy.classes),
                files=files,
            )
            _write_metadata(tmp / META, meta)
            os.chmod(tmp, 0o755)  # mkdtemp's 0700 would hide the snapshot from other users
            # 6.
            try:
                os.rename(tmp, self.root / name)
            except OSError as exc:  # ENOTEMPTY / EEXIST: another create took the name
                raise SnapshotError(f"snapshot {name!r} already exists") from exc
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        # 7.
        _fsync_path(self.root)
        return self.open(name)

    def _check_name(self, name: str) -> None:
        if not NAME_PATTERN.fullmatch(name):
            raise SnapshotError(
                f"invalid snapshot name {name!r}",
                hint="letters, digits, '.', '_' and '-', starting with a letter or digit",
            )
        if (self.root / name).exists():
            raise SnapshotError(
                f"snapshot {name!r} already exists; snapshots are never overwritten",
                hint="choose a new name",
            )

    def _sweep(self) -> None:
        cutoff = time.time() - STALE_TEMP_S
        for path in self.root.glob(f"{TEMP_PREFIX}*"):
            try:
                if path.stat().st_mtime < cutoff:
                    shutil.rmtree(path, ignore_errors=True)
            except FileNotFoundError:
                continue


def _write_parquet(path: Path, table: pa.Table) -> str:
    pq.write_table(table, path, compression="zstd")
    return _seal(path)


def _write_metadata(path: Path, meta: SnapshotMeta) -> None:
    path.write_text(json.dumps(meta.model_dump(mode="json"), indent=2) + "\n")
    _seal(path)


def _seal(path: Path) -> str:
    """Make ``path`` durable and read-only; return its sha256."""
    _fsync_path(path)
    os.chmod(path, READ_ONLY)
    return _sha256(path)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
