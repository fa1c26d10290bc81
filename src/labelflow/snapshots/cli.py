"""``labelflow snapshot …`` and ``labelflow runs …``: datasets and the training runs on them.

Heavy imports (pyarrow, the catalog) happen inside the commands, so ``labelflow --help``
stays fast.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Column, Table

if TYPE_CHECKING:
    from labelflow.config import Settings
    from labelflow.snapshots.gates import GateResult
    from labelflow.snapshots.store import Snapshot

console = Console()
err = Console(stderr=True)

snapshot_app = typer.Typer(
    help="Immutable, named dataset versions with leak-free splits and quality gates.",
    no_args_is_help=True,
)
runs_app = typer.Typer(help="Training runs and the snapshots they used.", no_args_is_help=True)

_NAME = typer.Argument(help="The snapshot's name (letters, digits, '.', '_', '-').")


def _settings(ctx: typer.Context) -> Settings:
    from labelflow.config import get_settings

    return ctx.obj if ctx.obj is not None else get_settings()


@snapshot_app.command("create")
def create(
    ctx: typer.Context,
    name: Annotated[str, _NAME],
    force: Annotated[
        bool, typer.Option("--force", help="Publish even if a gate fails (recorded).")
    ] = False,
    parent: Annotated[
        str | None,
        typer.Option(help="Diff and gate against this snapshot (default: the newest)."),
    ] = None,
) -> None:
    """Publish the catalog's current samples as an immutable snapshot, if the gates pass."""
    from labelflow.catalog.store import Catalog
    from labelflow.snapshots.store import SnapshotRefused, SnapshotStore

    settings = _settings(ctx)
    with Catalog(settings.resolved_catalog_url) as catalog:
        catalog.migrate()
        try:
            snapshot = SnapshotStore.from_settings(settings).create(
                name, catalog, settings, force=force, parent=parent
            )
        except SnapshotRefused as refused:
            _print_gates(refused.gates, err)
            raise
    meta = snapshot.meta
    console.print(
        f"[green]created[/] snapshot [bold]{meta.name}[/]: {meta.stats.samples} samples "
        f"({_splits(meta.stats.splits)})"
        + (f", parent {meta.parent}: {_changes(meta.diff)}" if meta.parent else ""),
        highlight=False,
    )
    _print_gates(meta.gates, console)
    if meta.forced:
        console.print(f"[yellow]forced past:[/] {', '.join(meta.overridden)}")


@snapshot_app.command("list")
def list_(ctx: typer.Context) -> None:
    """Every snapshot, oldest first."""
    from labelflow.snapshots.store import SnapshotStore

    table = Table("name", "created", "samples", "splits", "parent", "changes", "forced")
    for s in SnapshotStore.from_settings(_settings(ctx)).list():
        m = s.meta
        table.add_row(
            m.name,
            m.created_at.isoformat(timespec="seconds"),
            str(m.stats.samples),
            _splits(m.stats.splits),
            m.parent or "",
            _changes(m.diff) if m.diff is not None else "",
            ", ".join(m.overridden) if m.forced else "",
        )
    console.print(table)


@snapshot_app.command("show")
def show(
    ctx: typer.Context,
    name: Annotated[str, _NAME],
    as_json: Annotated[bool, typer.Option("--json", help="The whole metadata as JSON.")] = False,
) -> None:
    """A snapshot's metadata: parent and diff, classes, splits, gates, catalog state."""
    from labelflow.snapshots.store import SnapshotStore

    snapshot = SnapshotStore.from_settings(_settings(ctx)).open(name)
    if as_json:
        console.print_json(snapshot.meta.model_dump_json())
        return
    _print_snapshot(snapshot)


@snapshot_app.command("diff")
def diff(
    ctx: typer.Context,
    a: Annotated[str, typer.Argument(help="The older snapshot.")],
    b: Annotated[str, typer.Argument(help="The newer snapshot.")],
    limit: Annotated[int, typer.Option(help="Rows to list (0: counts only).")] = 20,
) -> None:
    """Samples added, removed or changed from A to B."""
    from labelflow.snapshots import diff as diffs
    from labelflow.snapshots.store import SnapshotStore

    store = SnapshotStore.from_settings(_settings(ctx))
    changes = diffs.diff(
        store.open(a).manifest(diffs.DIFF_INPUT), store.open(b).manifest(diffs.DIFF_INPUT)
    )
    console.print(f"{a} → {b}: {_changes(diffs.summary(changes))}", highlight=False)
    if limit > 0 and changes.num_rows:
        table = Table("sample", "change", "revision", "split")
        for row in changes.slice(0, limit).to_pylist():
            table.add_row(
                row["sample_id"],
                row["change"],
                f"{row['old_revision'] or ''} → {row['new_revision'] or ''}",
                f"{row['old_split'] or ''} → {row['new_split'] or ''}",
            )
        console.print(table)
        if changes.num_rows > limit:
            console.print(f"… and {changes.num_rows - limit} more (--limit)")


@snapshot_app.command("export")
def export(
    ctx: typer.Context,
    name: Annotated[str, _NAME],
    out: Annotated[Path, typer.Option("--out", "-o", help="A new directory to write.")],
    fmt: Annotated[str, typer.Option("--format", help="dir, coco or webdataset.")] = "dir",
) -> None:
    """Write a snapshot's images, masks and metadata as plain files, COCO or WebDataset."""
    from labelflow.catalog.blobs import BlobStore
    from labelflow.snapshots.export import export as export_snapshot
    from labelflow.snapshots.store import SnapshotStore

    settings = _settings(ctx)
    snapshot = SnapshotStore.from_settings(settings).open(name)
    count = export_snapshot(snapshot, BlobStore.from_settings(settings), out, fmt)  # type: ignore[arg-type]
    console.print(f"exported {count} samples of {name} as {fmt} to {out}", highlight=False)


@runs_app.command("record")
def runs_record(
    ctx: typer.Context,
    snapshot: Annotated[str, typer.Option(help="The snapshot the model was trained on.")],
    model: Annotated[str, typer.Option(help="The model: a name, path or registry URI.")],
    metrics: Annotated[Path, typer.Option(help="A JSON file of the run's metrics.")],
    notes: Annotated[str | None, typer.Option(help="Free text.")] = None,
) -> None:
    """Record a training run and the snapshot it used (an immutable JSON file)."""
    from labelflow.snapshots.runs import read_metrics, record_run

    settings = _settings(ctx)
    run = record_run(settings, snapshot, model, read_metrics(metrics), notes=notes)
    console.print(f"recorded run [bold]{run.run_id}[/] on {run.snapshot}", highlight=False)


@runs_app.command("list")
def runs_list(
    ctx: typer.Context,
    snapshot: Annotated[str | None, typer.Option(help="Only runs on this snapshot.")] = None,
    sample: Annotated[
        str | None, typer.Option(help="Only runs whose snapshot holds this sample.")
    ] = None,
) -> None:
    """Recorded training runs, oldest first."""
    from labelflow.snapshots.runs import list_runs, runs_for_sample

    settings = _settings(ctx)
    if sample is not None:
        found = [(r, split) for r, split in runs_for_sample(settings, sample)]
    else:
        found = [(r, "") for r in list_runs(settings, snapshot=snapshot)]
    extra = ["split"] if sample else []
    table = Table(Column("run", no_wrap=True), "snapshot", "model", "metrics", *extra)
    for run, split in found:
        if snapshot is not None and run.snapshot != snapshot:
            continue
        table.add_row(
            run.run_id,
            run.snapshot,
            run.model,
            json.dumps(run.metrics)[:60],
            *([split] if sample else []),
        )
    console.print(table)


def _print_snapshot(snapshot: Snapshot) -> None:
    m = snapshot.meta
    console.print(f"[bold]{m.name}[/]  created {m.created_at.isoformat(timespec='seconds')}")
    console.print(
        f"parent: {m.parent or '(none)'}"
        + (f"  ({_changes(m.diff)})" if m.diff is not None else ""),
        highlight=False,
    )
    console.print(f"samples: {m.stats.samples}  splits: {_splits(m.stats.splits)}")
    console.print(
        f"catalog: {m.catalog.live_samples} live of {m.catalog.known_samples}, last change "
        f"{m.catalog.last_change_at}, kafka {json.dumps(m.catalog.kafka_offsets)}",
        highlight=False,
    )
    console.print(f"code version: {m.code_version}  members by code: {m.stats.code_versions}")
    classes = Table("class", "samples", "pixels", "share of labelled")
    for name, c in m.stats.classes.items():
        classes.add_row(name, str(c.samples), str(c.pixels), f"{c.share:.3f}")
    console.print(classes)
    _print_gates(m.gates, console)
    if m.forced:
        console.print(f"[yellow]forced past:[/] {', '.join(m.overridden)}")


def _print_gates(gates: list[GateResult], out: Console) -> None:
    colour = {"passed": "green", "failed": "red", "not_measured": "dim"}
    table = Table("gate", "result", "value", "threshold", "why")
    for g in gates:
        table.add_row(
            g.code,
            f"[{colour[g.status]}]{g.status}[/]",
            "" if g.value is None else f"{g.value:g}",
            "" if g.threshold is None else f"{g.threshold:g}",
            g.message,
        )
    out.print(table)


def _splits(splits: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in splits.items()) or "empty"


def _changes(counts: dict[str, int] | None) -> str:
    if not counts:
        return "no changes"
    return ", ".join(f"{v} {k}" for k, v in counts.items())
