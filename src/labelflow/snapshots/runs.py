"""Training runs: which model was trained on which snapshot, with what result.

A run is one immutable JSON file under ``<data dir>/runs`` (written atomically, never
changed), naming the snapshot and the sha256 of its manifest, so the exact sample versions a
model saw stay answerable for as long as the snapshot exists: :func:`runs_for_sample` reads
the manifests of the runs' snapshots to say which runs trained on a sample.
"""

from __future__ import annotations

import json
import secrets
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from labelflow import __version__
from labelflow.catalog.blobs import atomic_write
from labelflow.config import Settings
from labelflow.errors import LabelflowError
from labelflow.model import utcnow
from labelflow.snapshots.store import MANIFEST, SnapshotStore


class RunRecord(BaseModel):
    run_id: str
    snapshot: str
    manifest_sha256: str
    splits: dict[str, int]
    model: str
    metrics: dict[str, Any]
    notes: str | None = None
    recorded_at: datetime
    code_version: str


def runs_dir(settings: Settings) -> Path:
    return settings.data_dir / "runs"


def record_run(
    settings: Settings,
    snapshot_name: str,
    model: str,
    metrics: dict[str, Any],
    *,
    notes: str | None = None,
) -> RunRecord:
    """Record a training run on ``snapshot_name`` (which must exist)."""
    snapshot = SnapshotStore.from_settings(settings).open(snapshot_name)
    now = utcnow()
    run = RunRecord(
        run_id=f"{now:%Y%m%dT%H%M%S}-{secrets.token_hex(4)}",
        snapshot=snapshot.name,
        manifest_sha256=snapshot.meta.files[MANIFEST],
        splits=snapshot.meta.stats.splits,
        model=model,
        metrics=metrics,
        notes=notes,
        recorded_at=now,
        code_version=__version__,
    )
    atomic_write(
        runs_dir(settings) / f"{run.run_id}.json",
        (json.dumps(run.model_dump(mode="json"), indent=2) + "\n").encode(),
    )
    return run


def read_metrics(path: Path) -> dict[str, Any]:
    try:
        metrics = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise LabelflowError(f"cannot read metrics from {path}: {exc}") from exc
    if not isinstance(metrics, dict):
        raise LabelflowError(f"{path} must hold a JSON object of metrics")
    return metrics


def list_runs(settings: Settings, *, snapshot: str | None = None) -> list[RunRecord]:
    """Every recorded run (of ``snapshot`` only, if given), oldest first."""
    directory = runs_dir(settings)
    found = (
        [RunRecord.model_validate_json(p.read_bytes()) for p in sorted(directory.glob("*.json"))]
        if directory.is_dir()
        else []
    )
    return [r for r in found if snapshot is None or r.snapshot == snapshot]


def runs_for_sample(settings: Settings, sample_id: str) -> list[tuple[RunRecord, str]]:
    """The runs whose snapshot holds ``sample_id``, each with the split it was in there."""
    store = SnapshotStore.from_settings(settings)
    splits: dict[str, str | None] = {}
    out = []
    for run in list_runs(settings):
        if run.snapshot not in splits:
            hit = store.open(run.snapshot).manifest(["split"], sample_id=sample_id)
            splits[run.snapshot] = hit.column("split")[0].as_py() if hit.num_rows else None
        split = splits[run.snapshot]
        if split is not None:
            out.append((run, split))
    return out
