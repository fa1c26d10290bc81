"""``labelflow reconcile``: one reconcile run now, and the runs recorded so far."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console

from labelflow.catalog.store import Catalog
from labelflow.config import Settings
from labelflow.errors import LabelflowError
from labelflow.reconcile.drift import CATEGORIES
from labelflow.reconcile.listing import SourceListing
from labelflow.reconcile.runs import RunReport
from labelflow.tables import listing

console = Console()

reconcile_app = typer.Typer(
    help="Compare a source with the catalog and repair drift through the pipeline.",
    invoke_without_command=True,
)

_JSON = typer.Option("--json", help="Print JSON, not a table.")


def open_source(settings: Settings, name: str | None, seed: int, tasks: int) -> SourceListing:
    """The source called ``name``: ``labelstudio`` (the configured project),
    ``labelstudio:<project>``, or ``synthetic`` (the history of ``seed`` and ``tasks``)."""
    from labelflow.reconcile.listing import LabelStudioSource, SyntheticSource

    if name is None:
        name = "labelstudio" if settings.labelstudio_project is not None else None
    if name == "synthetic":
        from labelflow.sources.synthetic import SyntheticConfig, generate

        history = generate(SyntheticConfig(seed=seed, tasks=tasks))
        return SyntheticSource.from_deliveries(d.value for d in history.deliveries)
    if name is not None and name.split(":")[0] == "labelstudio":
        project = int(name.split(":", 1)[1]) if ":" in name else settings.labelstudio_project
        if project is None or not settings.uses_labelstudio:
            raise LabelflowError(
                "No Label Studio project to reconcile.",
                hint="connect one with: labelflow source add labelstudio",
            )
        return LabelStudioSource(settings, project)
    raise LabelflowError(
        f"No source {name!r} to reconcile." if name else "No source to reconcile.",
        hint="pass --source labelstudio[:PROJECT] or --source synthetic",
    )


@reconcile_app.callback()
def reconcile(
    ctx: typer.Context,
    source: Annotated[
        str | None,
        typer.Option(help="labelstudio[:PROJECT] (default: the connected one) or synthetic."),
    ] = None,
    dry_run: Annotated[bool, typer.Option(help="Classify drift, emit no repair.")] = False,
    as_json: Annotated[bool, _JSON] = False,
    seed: Annotated[int, typer.Option(help="synthetic: the history's seed.")] = 0,
    tasks: Annotated[int, typer.Option(help="synthetic: the history's tasks.")] = 20,
) -> None:
    """Run one reconcile cycle: list the source, compare with the catalog, emit repairs into
    annotations.raw, record the run. Exit 1 when tasks are stuck or held in quarantine."""
    if ctx.invoked_subcommand is not None:
        return
    from labelflow.openlineage import reconcile_lineage
    from labelflow.reconcile.reconciler import Reconciler

    settings: Settings = ctx.obj
    listing = open_source(settings, source, seed, tasks)
    try:
        with Catalog(settings.resolved_catalog_url) as catalog:
            catalog.migrate()
            lineage = None if dry_run else reconcile_lineage(settings)
            report = Reconciler(settings, catalog, listing, lineage=lineage).run(dry_run=dry_run)
    finally:
        close = getattr(listing, "close", None)
        if close is not None:
            close()
    if as_json:
        typer.echo(report.model_dump_json(indent=2))
    else:
        _print_report(report)
    if report.counts.get("held", 0) or report.counts.get("stuck", 0):
        raise typer.Exit(1)


def _print_report(report: RunReport) -> None:
    emitted = "dry run, nothing emitted" if report.dry_run else f"{report.repairs} repair(s)"
    console.print(
        f"[bold]{report.source}[/]: {report.listed} listed, {report.catalogued} in the catalog, "
        f"{report.drift} drifted, {emitted}, {report.duration_s:.2f} s (run {report.run_id})",
        highlight=False,
    )
    table = listing("category", "tasks", "examples")
    for category in CATEGORIES:
        examples = ", ".join(str(e["task_id"]) for e in report.examples.get(category, []))
        table.add_row(category, str(report.counts.get(category, 0)), examples)
    console.print(table)


@reconcile_app.command("runs")
def reconcile_runs(
    ctx: typer.Context,
    source: Annotated[str | None, typer.Option(help="Only runs of this source.")] = None,
    limit: Annotated[int, typer.Option(help="How many, newest first.")] = 20,
    as_json: Annotated[bool, _JSON] = False,
) -> None:
    """The recorded reconcile runs, newest first: counts per category, repairs, outcome."""
    from labelflow.reconcile.runs import recent

    settings: Settings = ctx.obj
    with Catalog(settings.resolved_catalog_url) as catalog:
        catalog.migrate()
        found = recent(catalog, source=source, limit=limit)
    if as_json:
        typer.echo(json.dumps([r.model_dump(mode="json") for r in found], indent=2))
        return
    table = listing("run", "source", "started", "s", "outcome", "drift", "repairs", "counts")
    for r in found:
        counts = ", ".join(f"{k} {n}" for k, n in r.counts.items() if n)
        table.add_row(
            r.run_id[:12],
            r.source,
            r.started_at.strftime("%Y-%m-%d %H:%M:%S"),
            f"{r.duration_s:.2f}",
            r.outcome + (" (dry run)" if r.dry_run else ""),
            str(r.drift),
            str(r.repairs),
            counts,
        )
    console.print(table)
