"""``labelflow explain SAMPLE_ID``: the whole chain of one sample, readable or as JSON; and
``labelflow lineage forward``: OpenLineage events from Kafka to their transport."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from labelflow.catalog.store import Catalog
from labelflow.config import Settings
from labelflow.lineage import Explanation, explain
from labelflow.tables import listing

console = Console()

lineage_app = typer.Typer(help="OpenLineage events: forward them to a file or an endpoint.")


def explain_command(
    ctx: typer.Context,
    sample_id: Annotated[str, typer.Argument(help="The sample (task) id.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON, not tables.")] = False,
) -> None:
    """Where a sample came from: every revision and its lineage, every record of it in the
    pipeline's topics (deliveries, retries, quarantines, dead letters), its blobs."""
    settings: Settings = ctx.obj
    with Catalog(settings.resolved_catalog_url) as catalog:
        catalog.migrate()
        found = explain(settings, catalog, sample_id)
    if as_json:
        typer.echo(found.model_dump_json(indent=2))
    else:
        render(found)
    if found.state is None and not found.journey:
        raise typer.Exit(1)


def render(found: Explanation) -> None:
    state = found.state
    if state is None:
        console.print(f"[bold]{found.sample_id}[/]: not in the catalog", highlight=False)
    else:
        now = "[red]deleted[/]" if state.deleted else "[green]live[/]"
        console.print(
            f"[bold]{found.sample_id}[/]: {now} at revision {state.revision} "
            f"(since {state.updated_at:%Y-%m-%d %H:%M:%S})",
            highlight=False,
        )
    versions = listing(
        "rev", "now", "image", "mask", "source / event", "imagery", "code / config",
        "made from", "failed checks",
    )  # fmt: skip
    versions.title = "versions"
    for facts in found.versions:
        v, lin = facts.version, facts.version.lineage
        failed = ", ".join(c.code for c in v.checks if not c.passed) or "-"
        versions.add_row(
            str(v.revision),
            "*" if facts.current else "",
            v.image_hash[:12] + ("" if facts.blobs["image"] else " [red](missing)[/]"),
            v.mask_hash[:12] + ("" if facts.blobs["mask"] else " [red](missing)[/]"),
            f"{lin.source} / {lin.event_id[:12]}",
            f"{lin.image_uri} ({lin.image_content_hash[:12]})",
            f"{lin.code_version} / {lin.config_hash}",
            f"{lin.kafka_topic}[{lin.kafka_partition}]@{lin.kafka_offset}",
            failed,
        )
    console.print(versions)
    if found.tombstones:
        deletions = listing("rev", "reason", "source", "from", "committed")
        deletions.title = "deletions"
        for t in found.tombstones:
            deletions.add_row(
                str(t.revision),
                t.reason,
                t.source or "",
                f"{t.kafka_topic}[{t.kafka_partition}]@{t.kafka_offset}",
                f"{t.committed_at:%Y-%m-%d %H:%M:%S}",
            )
        console.print(deletions)
    steps = listing("time", "where", "what", "rev", "status", "detail")
    steps.title = "journey"
    for s in found.journey:
        detail = ", ".join(f"{k}={v}" for k, v in s.detail.items())
        steps.add_row(
            f"{s.timestamp:%H:%M:%S.%f}"[:-3],
            f"{s.topic}[{s.partition}]@{s.offset}",
            s.kind,
            "" if s.revision is None else str(s.revision),
            s.status or "",
            detail,
        )
    console.print(steps)
    if found.snapshots:
        held = listing("snapshot", "taken", "revision", "split", "why not")
        held.title = "snapshots"
        for m in found.snapshots:
            held.add_row(
                m.snapshot,
                f"{m.created_at:%Y-%m-%d %H:%M:%S}",
                "" if m.revision is None else str(m.revision),
                m.split or "",
                m.why_not or "",
            )
        console.print(held)
    if found.repair:
        r = found.repair
        console.print(
            f"reconcile repaired it as {r['category']} at revision {r['revision']} "
            f"({r['attempts']} attempt(s), last {r['last_at']})",
            highlight=False,
        )


@lineage_app.command("forward")
def lineage_forward(
    ctx: typer.Context,
    url: Annotated[
        str | None, typer.Option(help="An OpenLineage HTTP endpoint (e.g. Marquez).")
    ] = None,
    file: Annotated[
        Path | None, typer.Option(help="JSON lines file (default <data dir>/lineage/events.jsonl).")
    ] = None,
    follow: Annotated[bool, typer.Option(help="Keep forwarding until Ctrl-C.")] = False,
) -> None:
    """Send the events waiting in the lineage topic to the transport, in order; each is
    committed only once the transport took it, so an endpoint that is down loses nothing."""
    from labelflow.openlineage import file_transport, forward, http_transport

    settings: Settings = ctx.obj
    path = file or settings.data_dir / "lineage" / "events.jsonl"
    transport = http_transport(url) if url else file_transport(path)
    sent = forward(settings, transport, once=not follow)
    console.print(f"{sent} lineage event(s) forwarded to {url or path}", highlight=False)
