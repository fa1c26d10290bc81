"""``labelflow quarantine list | show | rerun``: what was held back, why, and trying again.

``rerun`` writes a held event back to ``annotations.raw`` exactly once (see
:mod:`labelflow.kafka.quarantine`), for after the cause was fixed: a class added to the
taxonomy, a rule loosened, imagery put in place. Records held at ingest have no event to
re-run: fix the file and ingest it again.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import typer
from rich.console import Console

from labelflow.config import Settings
from labelflow.errors import LabelflowError
from labelflow.kafka.quarantine import HeldRevision
from labelflow.tables import fit, listing, print_json, short_time

console = Console()

quarantine_app = typer.Typer(
    help="Revisions held back with their reasons: list, show, re-run.", no_args_is_help=True
)

_STAGE = typer.Option("--stage", help="Only records of this stage.", show_default=False)
_CODE = typer.Option("--code", help="Only records with this reason code.", show_default=False)
_TASK = typer.Option("--task", help="Only records of this task id.", show_default=False)
_SINCE = typer.Option(
    "--since", help="Only records held since: 30m, 2h, 7d or an ISO time.", show_default=False
)
_JSON = typer.Option("--json", help="Print JSON instead of a table.")


def _select(
    stage: str | None,
    code: str | None,
    task: str | None,
    since: str | None,
    ids: list[str] | None = None,
) -> Callable[[HeldRevision], bool]:
    from labelflow.kafka.dlq import parse_since
    from labelflow.kafka.quarantine import matches

    when = parse_since(since) if since else None
    return matches(stage=stage, code=code, task=task, since=when, ids=frozenset(ids or ()))


def _as_dict(item: HeldRevision, full: bool = False) -> dict[str, Any]:
    held = item.held
    row: dict[str, Any] = {
        "id": item.id,
        "stage": held.stage if held else None,
        "task_id": held.task_id if held else None,
        "revision": held.revision if held else None,
        "codes": item.codes,
        "quarantined_at": item.when.isoformat(),
        "rerun": item.rerun,
        "can_rerun": item.can_rerun,
    }
    if held is not None:
        row["reasons"] = [r.model_dump(exclude_none=True) for r in held.reasons]
        row["source"] = {
            "topic": held.source_topic,
            "partition": held.source_partition,
            "offset": held.source_offset,
        }
        if full:
            row["event"] = held.event.model_dump(mode="json") if held.event else None
            row["raw_excerpt"] = held.raw_excerpt
    return row


@quarantine_app.command("list")
def quarantine_list(
    ctx: typer.Context,
    stage: Annotated[str | None, _STAGE] = None,
    code: Annotated[str | None, _CODE] = None,
    task: Annotated[str | None, _TASK] = None,
    since: Annotated[str | None, _SINCE] = None,
    as_json: Annotated[bool, _JSON] = False,
) -> None:
    """List quarantined records: id, stage, task, reason codes, when, re-run."""
    from labelflow.kafka.quarantine import read_quarantine

    settings: Settings = ctx.obj
    select = _select(stage, code, task, since)
    items = [i for i in read_quarantine(settings) if select(i)]
    if as_json:
        print_json(console, (_as_dict(i) for i in items))
        return
    table = listing("id", "stage", "task", "reason", "held (UTC)", "rerun")
    for item in items:
        held = item.held
        table.add_row(
            item.id,
            held.stage if held else "?",
            (held.task_id or "") if held else "",
            "\n".join(item.codes),
            short_time(item.when),
            "yes" if item.rerun else "",
        )
    console.print(fit(table, console.width, "stage", "task", "held (UTC)"))
    console.print(f"{len(items)} quarantined record(s)")


@quarantine_app.command("show")
def quarantine_show(
    ctx: typer.Context,
    record_id: Annotated[str, typer.Argument(metavar="ID", help="partition:offset, from list.")],
    as_json: Annotated[bool, _JSON] = False,
) -> None:
    """Show one quarantined record: every reason, where it came from, what was held."""
    from labelflow.kafka.quarantine import read_quarantine

    found = [i for i in read_quarantine(ctx.obj) if i.id == record_id]
    if not found:
        raise LabelflowError(
            f"No quarantined record {record_id}.", hint="see: labelflow quarantine list"
        )
    item = found[0]
    row = _as_dict(item, full=True)
    if as_json:
        print_json(console, row)
        return
    held = item.held
    console.print(f"[bold]quarantined {item.id}[/]  re-run: {'yes' if item.rerun else 'no'}")
    if held is None:
        console.print("the record cannot be decoded as a quarantine record")
        return
    console.print(f"stage:   {held.stage}", highlight=False)
    console.print(f"task:    {held.task_id or '(unknown)'}  revision: {held.revision}")
    origin = held.source_topic
    if held.source_partition >= 0:
        origin += f"[{held.source_partition}]@{held.source_offset}"
    else:
        origin += f" (item #{held.source_offset})"
    console.print(f"from:    {origin}", highlight=False, markup=False)
    console.print(f"held at: {held.quarantined_at.isoformat()}")
    for reason in held.reasons:
        where = f" (feature {reason.feature})" if reason.feature is not None else ""
        console.print(f"  {reason.code}{where}: {reason.message}", highlight=False, markup=False)
    if held.event is not None:
        console.print("event:")
        console.print_json(held.event.model_dump_json())
    elif held.raw_excerpt is not None:
        console.print("raw (start):", highlight=False)
        console.print(held.raw_excerpt, highlight=False, markup=False)


@quarantine_app.command("rerun")
def quarantine_rerun(
    ctx: typer.Context,
    stage: Annotated[str | None, _STAGE] = None,
    code: Annotated[str | None, _CODE] = None,
    task: Annotated[str | None, _TASK] = None,
    since: Annotated[str | None, _SINCE] = None,
    ids: Annotated[
        list[str] | None, typer.Option("--id", help="Only this record (repeatable).")
    ] = None,
    dry_run: Annotated[bool, typer.Option(help="Say what would be re-run.")] = False,
    as_json: Annotated[bool, _JSON] = False,
) -> None:
    """Write the held events of matching records back to annotations.raw, once each.

    Only records holding an event can be re-run (not ones refused at ingest: fix the file
    and ingest it again). Select by filters or --id; with none, every record is re-run.
    """
    from labelflow.kafka.quarantine import rerun

    done = rerun(ctx.obj, _select(stage, code, task, since, ids), dry_run=dry_run)
    if as_json:
        print_json(console, {"dry_run": dry_run, "rerun": [_as_dict(i) for i in done]})
        return
    verb = "would re-run" if dry_run else "re-ran"
    for item in done:
        task_id = item.held.task_id if item.held else "?"
        console.print(f"{verb} {item.id} (task {task_id}) -> annotations.raw", highlight=False)
    console.print(f"{len(done)} record(s) {verb}.")
