"""The ``labelflow`` command line (Typer + Rich)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from labelflow import __version__
from labelflow.audit import audit_command
from labelflow.config import Settings, get_settings
from labelflow.errors import ClassifiedError, LabelflowError
from labelflow.kafka.broker import LocalBroker
from labelflow.kafka.clients import admin_client
from labelflow.kafka.ensure import ensure_topics
from labelflow.kafka.topics import declared_topics, resolve
from labelflow.lineage_cli import explain_command, lineage_app
from labelflow.logs import setup_logging
from labelflow.quarantine_cli import quarantine_app
from labelflow.reconcile.cli import reconcile_app
from labelflow.snapshots.cli import runs_app, snapshot_app
from labelflow.sources.cli import source_app
from labelflow.tables import fit, listing, print_json, short_time

if TYPE_CHECKING:
    from labelflow.kafka.dlq import DeadLetter

console = Console()
err = Console(stderr=True)

app = typer.Typer(
    help="labelflow: annotations in, versioned and lineage-tracked training datasets out.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
kafka_app = typer.Typer(
    help="The local Apache Kafka broker (single node, KRaft).", no_args_is_help=True
)
topics_app = typer.Typer(help="The pipeline's topics, declared in code.", no_args_is_help=True)
app.add_typer(kafka_app, name="kafka")
app.add_typer(topics_app, name="topics")
app.add_typer(source_app, name="source")
app.add_typer(reconcile_app, name="reconcile")
app.command("explain")(explain_command)
app.command("audit")(audit_command)
app.add_typer(lineage_app, name="lineage")
app.add_typer(snapshot_app, name="snapshot")
app.add_typer(runs_app, name="runs")


def _settings(ctx: typer.Context) -> Settings:
    return ctx.obj


def _with_threads(settings: Settings, threads: int | None) -> Settings:
    return (
        settings
        if threads is None
        else settings.model_copy(update={"materialize_threads": threads})
    )


def _version(value: bool) -> None:
    if value:
        console.print(f"labelflow {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    ctx: typer.Context,
    data_dir: Annotated[
        Path | None,
        typer.Option(help="Where local state lives (env LABELFLOW_DATA_DIR).", show_default=False),
    ] = None,
    log_level: Annotated[
        str | None,
        typer.Option(
            help="DEBUG, INFO, WARNING or ERROR (env LABELFLOW_LOG_LEVEL; default WARNING).",
            show_default=False,
        ),
    ] = None,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show version.")
    ] = False,
) -> None:
    overrides: dict[str, object] = {"data_dir": data_dir} if data_dir else {}
    if log_level:
        overrides["log_level"] = log_level.upper()
    settings = get_settings(**overrides)
    setup_logging(settings.log_level, settings.log_format)
    ctx.obj = settings


# --- kafka --------------------------------------------------------------------------------
@kafka_app.command("up")
def kafka_up(ctx: typer.Context) -> None:
    """Start the local broker in the background and wait until it serves (no-op if running)."""
    settings = _settings(ctx)
    if not settings.uses_local_broker:
        console.print(
            f"LABELFLOW_KAFKA_BOOTSTRAP is set: using the cluster at "
            f"[bold]{settings.kafka_bootstrap}[/]; no local broker is started."
        )
        return
    broker = LocalBroker(settings)
    started_at = time.monotonic()
    with console.status("Starting Apache Kafka (first run fetches its jars with Maven)…"):
        status, started = broker.up()
    if started:
        console.print(
            f"[green]Kafka is up[/] at [bold]{status.bootstrap}[/] "
            f"(pid {status.pid}, ready in {time.monotonic() - started_at:.1f} s)"
        )
    else:
        console.print(f"Kafka is already running at [bold]{status.bootstrap}[/] (pid {status.pid})")


@kafka_app.command("down")
def kafka_down(ctx: typer.Context) -> None:
    """Stop the local broker gracefully (SIGTERM, then SIGKILL after a timeout)."""
    settings = _settings(ctx)
    if not settings.uses_local_broker:
        console.print("LABELFLOW_KAFKA_BOOTSTRAP is set: there is no local broker to stop.")
        return
    console.print(f"Kafka: {LocalBroker(settings).down()}")


@kafka_app.command("status")
def kafka_status(ctx: typer.Context) -> None:
    """Say whether the broker runs and answers. Exit 1 when it does not."""
    settings = _settings(ctx)
    if not settings.uses_local_broker:
        from labelflow.kafka.broker import describe_cluster

        try:
            nodes = describe_cluster(settings)
        except Exception as exc:  # noqa: BLE001 - reported, not raised
            err.print(f"[red]cluster at {settings.kafka_bootstrap} does not answer:[/] {exc}")
            raise typer.Exit(1) from None
        console.print(f"external cluster at {settings.kafka_bootstrap}: {nodes} broker(s)")
        return
    status = LocalBroker(settings).status()
    if not status.running:
        console.print(f"Kafka is [red]not running[/] (data in {status.data_dir})")
        raise typer.Exit(1)
    health = "[green]answering[/]" if status.reachable else "[yellow]not answering[/]"
    console.print(
        f"Kafka is running (pid {status.pid}) at [bold]{status.bootstrap}[/], {health}; "
        f"data in {status.data_dir}"
    )
    if not status.reachable:
        raise typer.Exit(1)


@kafka_app.command("logs")
def kafka_logs(
    ctx: typer.Context,
    lines: Annotated[int, typer.Option("-n", "--lines", help="How many lines.")] = 50,
    follow: Annotated[bool, typer.Option("-f", "--follow", help="Keep printing.")] = False,
) -> None:
    """Show the end of the local broker's log."""
    broker = LocalBroker(_settings(ctx))
    text = broker.log_tail(lines)
    if not text:
        err.print(f"No broker log yet at {broker.broker_log}; start it with: labelflow kafka up")
        raise typer.Exit(1)
    console.print(text, markup=False, highlight=False)
    if follow:
        with broker.broker_log.open() as fh:
            fh.seek(0, 2)
            try:
                while True:
                    line = fh.readline()
                    if line:
                        console.print(line.rstrip("\n"), markup=False, highlight=False)
                    else:
                        time.sleep(0.3)
            except KeyboardInterrupt:
                return


# --- topics -------------------------------------------------------------------------------
@topics_app.command("ensure")
def topics_ensure(ctx: typer.Context) -> None:
    """Create the pipeline's missing topics; report existing ones whose settings differ.

    Exits 0 even with differences: they are reported, never changed, because altering a
    topic's partitions would move keys between partitions and break per-task ordering.
    """
    settings = _settings(ctx)
    report = ensure_topics(admin_client(settings), resolve(declared_topics(settings), settings))
    for name in report.created:
        console.print(f"[green]created[/]   {name}")
    for name in report.unchanged:
        console.print(f"[dim]ok[/]        {name}")
    for d in report.drifts:
        console.print(
            f"[yellow]differs[/]   {d.topic}: {d.setting} is {d.actual}, declared {d.expected}"
        )
    if report.drifts:
        console.print(
            "[yellow]Existing topics differ from their declaration; labelflow does not alter "
            "them. Change them with your cluster's tools, or the declaration.[/]"
        )


@topics_app.command("list")
def topics_list(ctx: typer.Context) -> None:
    """Show the declared topics and their settings."""
    settings = _settings(ctx)
    table = Table("topic", "partitions", "cleanup", "retention", "purpose")
    for t in resolve(declared_topics(settings), settings):
        retention_ms = int(t.config["retention.ms"])
        retention = "forever" if retention_ms < 0 else f"{retention_ms // 86_400_000} d"
        table.add_row(t.name, str(t.partitions), t.config["cleanup.policy"], retention, t.purpose)
    console.print(table)


# --- pipeline -----------------------------------------------------------------------------
@app.command("demo")
def demo(
    ctx: typer.Context,
    duration: Annotated[
        float, typer.Option(help="Seconds of synthetic traffic (then it drains and stops).")
    ] = 60.0,
    rate: Annotated[float, typer.Option(help="Synthetic deliveries per second.")] = 20.0,
    seed: Annotated[
        int | None, typer.Option(help="Seed of the synthetic history (default: new each run).")
    ] = None,
    bad_fraction: Annotated[float, typer.Option(help="Share of bad inputs injected.")] = 0.05,
    workers: Annotated[int, typer.Option(help="Worker processes per stage.")] = 1,
    threads: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Threads per materialize worker (default: the machine's cores).",
            show_default=False,
        ),
    ] = None,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Also write the summary as JSON here.")
    ] = None,
) -> None:
    """Run the whole pipeline on synthetic imagery and annotations, with live progress.

    Starts the local broker (unless LABELFLOW_KAFKA_BOOTSTRAP is set), creates the topics,
    runs every stage as worker processes, feeds them a synthetic history with edits,
    deletions, duplicates and bad inputs, and prints a summary. Ctrl-C stops it cleanly.
    """
    from labelflow.demo import DemoOptions, run_demo, write_summary_table

    settings = _with_threads(_settings(ctx), threads)
    options = DemoOptions(
        duration_s=duration,
        rate_per_s=rate,
        seed=seed,
        bad_fraction=bad_fraction,
        workers_per_stage=workers,
    )
    summary = run_demo(settings, options, console)
    write_summary_table(summary, console)
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(summary, indent=2, default=str) + "\n")
        console.print(f"Summary written to {json_path}")
    if not summary["interrupted"] and not summary["matches_expected_state"]:
        err.print(
            "[yellow]The catalog does not match the expected final state yet; see the worker "
            f"logs in {settings.data_dir / 'logs'}[/]"
        )
        raise typer.Exit(1)


@app.command("up")
def up(
    ctx: typer.Context,
    host: Annotated[str, typer.Option(help="Address the API listens on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port the API listens on.")] = 8080,
    workers: Annotated[int, typer.Option(help="Worker processes per stage.")] = 1,
    threads: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Threads per materialize worker (default: the machine's cores).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Run labelflow: broker, topics, catalog, every stage and the API, until Ctrl-C/SIGTERM.

    Starts the local broker unless LABELFLOW_KAFKA_BOOTSTRAP is set, and the labelstudio
    stage when LABELFLOW_LABELSTUDIO_URL and _TOKEN are set. The API serves /healthz,
    /metrics, /samples and, with LABELFLOW_LABELSTUDIO_WEBHOOK_SECRET, Label Studio's
    webhooks. Exits 0 once everything stopped cleanly.
    """
    from labelflow.service import serve, stopped_cleanly

    settings = _with_threads(_settings(ctx), threads)
    exit_codes = serve(settings, console, host=host, port=port, workers=workers)
    failed = {w: code for w, code in exit_codes.items() if not stopped_cleanly(code)}
    if failed:
        err.print(f"[yellow]workers that did not stop cleanly:[/] {failed}")
        raise typer.Exit(1)
    console.print("labelflow stopped.")


@app.command("ingest")
def ingest(
    ctx: typer.Context,
    paths: Annotated[
        list[Path],
        typer.Argument(help="GeoJSON, COCO or Label Studio export files, or folders of them."),
    ],
) -> None:
    """Send annotation files into the pipeline. Re-ingesting an unchanged file is a no-op.

    Each task is read on its own: one that cannot become a revision is quarantined (see
    labelflow quarantine list) and the file's other tasks are sent. Ends with a summary;
    exits 1 when anything was refused.
    """
    from rich.text import Text

    from labelflow.sources.ingest import Ingest, find_files

    files = find_files(paths)
    if not files:
        err.print("No .json or .geojson files found in the given paths.")
        raise typer.Exit(1)

    def report(kind: str, text: str) -> None:
        if kind == "read":
            console.print(Text.assemble(("read ", "green"), text))
        else:
            err.print(Text.assemble(("refused ", "red"), text))

    summary = Ingest(_settings(ctx), report=report).run(files)
    refused = ", ".join(f"{code} {n}" for code, n in sorted(summary.refused.items()))
    console.print(
        f"{summary.files} file(s), {summary.sent} revision(s) sent, "
        f"{sum(summary.refused.values())} refused" + (f" ({refused})" if refused else ""),
        highlight=False,
    )
    if summary.quarantined or summary.already_quarantined:
        console.print(
            f"quarantined {summary.quarantined} "
            f"({summary.already_quarantined} already were): labelflow quarantine list",
            highlight=False,
        )
    if not summary.clean:
        raise typer.Exit(1)


samples_app = typer.Typer(help="Samples in the catalog.", no_args_is_help=True)
app.add_typer(samples_app, name="samples")


@samples_app.command("list")
def samples_list(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option(help="How many at most.")] = 50,
    after: Annotated[
        str | None, typer.Option(help="Start after this sample id (paging).", show_default=False)
    ] = None,
) -> None:
    """List current samples (live ones), ordered by id."""
    from sqlalchemy.engine import make_url

    from labelflow.catalog.store import Catalog

    with Catalog(_settings(ctx).resolved_catalog_url) as catalog:
        catalog.migrate()
        table = Table("sample", "revision", "size", "classes (pixels)", "source")
        for v in catalog.list(after=after, limit=limit):
            classes = ", ".join(f"{k} {n}" for k, n in sorted(v.class_pixels.items()) if n)
            table.add_row(
                v.sample_id, str(v.revision), f"{v.width}x{v.height}", classes, v.lineage.source
            )
        console.print(table)
        shown = make_url(catalog.url).render_as_string(hide_password=True)
        console.print(f"{catalog.count()} live sample(s) in {shown}")


@samples_app.command("show")
def samples_show(
    ctx: typer.Context, sample_id: Annotated[str, typer.Argument(help="The sample (task) id.")]
) -> None:
    """Show a sample's current version, its lineage and its history."""
    from labelflow.catalog.store import Catalog

    with Catalog(_settings(ctx).resolved_catalog_url) as catalog:
        catalog.migrate()
        state = catalog.state(sample_id)
        if state is None:
            err.print(f"No sample {sample_id!r} in the catalog; try: labelflow samples list")
            raise typer.Exit(1)
        current = catalog.get(sample_id)
        if current is None:
            console.print(f"{sample_id}: [red]deleted[/] at revision {state.revision}")
        else:
            console.print_json(current.model_dump_json(exclude={"features"}))
        history = Table("revision", "image", "mask", "created")
        for v in catalog.history(sample_id):
            history.add_row(
                str(v.revision), v.image_hash[:12], v.mask_hash[:12], v.created_at.isoformat()
            )
        for t in catalog.tombstones(sample_id):
            history.add_row(str(t.revision), f"[red]{t.reason}[/]", "", t.committed_at.isoformat())
        console.print(history)


# --- run ----------------------------------------------------------------------------------
@app.command("run")
def run_stage(
    ctx: typer.Context,
    stage: Annotated[str, typer.Argument(help="A built-in stage name, or module:attribute.")],
    worker_id: Annotated[
        str | None,
        typer.Option(
            envvar="LABELFLOW_WORKER_ID",
            help="Stable id of this worker (e.g. a pod ordinal): a restart then fences the "
            "previous process at once. Random when unset.",
            show_default=False,
        ),
    ] = None,
    metrics_port: Annotated[
        int | None, typer.Option(help="Serve Prometheus /metrics on this port.")
    ] = None,
) -> None:
    """Run one worker process of a stage until SIGTERM/SIGINT (exit 0) or a fatal error.

    A second SIGTERM/SIGINT ends it at once; a worker that hangs in a Kafka call past its
    bound, or is still busy ``shutdown_timeout_s`` after a stop request, ends itself with exit
    code 75 so that its supervisor restarts it.
    """
    import os

    from labelflow.kafka import metrics
    from labelflow.kafka.runner import Runner
    from labelflow.shutdown import SignalThread, die_with_parent
    from labelflow.stage import load_stage
    from labelflow.watchdog import EXIT_HUNG, Watchdog

    settings = _settings(ctx)
    supervisor = os.environ.get("LABELFLOW_SUPERVISOR_PID")
    parent = int(supervisor) if supervisor and supervisor.isdigit() else None
    stage_ = load_stage(stage)

    def graceful(_signum: int = 0) -> None:
        runner.stop()
        watchdog.arm(settings.shutdown_timeout_s, "graceful stop")

    watchdog = Watchdog(
        f"{stage_.name}-{worker_id or 'worker'}", parent_pid=parent, on_orphaned=graceful
    )
    runner = Runner(stage_, settings, worker_id=worker_id, watchdog=watchdog)
    # Signals first, on their own thread, before any other thread exists (see SignalThread).
    SignalThread(on_first=graceful, on_second=lambda _signum: os._exit(EXIT_HUNG)).start()
    watchdog.start()
    if parent is not None and not die_with_parent(parent):
        return  # the supervisor died while this worker was starting
    if metrics_port is not None:
        metrics.serve(metrics_port)
    runner.run()


# --- dlq ----------------------------------------------------------------------------------
dlq_app = typer.Typer(
    help="The dead-letter topic: what failed, why, and replaying it.", no_args_is_help=True
)
app.add_typer(dlq_app, name="dlq")
app.add_typer(quarantine_app, name="quarantine")

_STAGE_OPTION = typer.Option("--stage", help="Only letters of this stage.", show_default=False)
_CODE_OPTION = typer.Option("--code", help="Only this error code.", show_default=False)
_SINCE_OPTION = typer.Option(
    "--since", help="Only failures since: 30m, 2h, 7d or an ISO time.", show_default=False
)


def _dlq_filter(
    stage: str | None, code: str | None, since: str | None, ids: list[str] | None = None
) -> Callable[[DeadLetter], bool]:
    from labelflow.kafka.dlq import matches, parse_since

    when = parse_since(since) if since else None
    return matches(stage=stage, code=code, since=when, ids=frozenset(ids or ()))


@dlq_app.command("list")
def dlq_list(
    ctx: typer.Context,
    stage: Annotated[str | None, _STAGE_OPTION] = None,
    code: Annotated[str | None, _CODE_OPTION] = None,
    since: Annotated[str | None, _SINCE_OPTION] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON, not a table.")] = False,
) -> None:
    """List dead letters: id, stage, reason, tries, origin, last failure, replayed."""
    from labelflow.kafka.dlq import read_dead_letters

    select = _dlq_filter(stage, code, since)
    letters = list(filter(select, read_dead_letters(_settings(ctx))))
    if as_json:
        print_json(console, (_letter_row(d) for d in letters))
        return
    table = listing("id", "stage", "code", "tries", "origin", "last failure", "replayed")
    for d in letters:
        f = d.failure
        if f is None:
            table.add_row(d.id, "?", "(headers damaged)", "", "", "", "")
            continue
        table.add_row(
            d.id,
            f.stage,
            f.code,
            str(f.attempts),
            f"{f.original_topic}[{f.original_partition}]@{f.original_offset}",
            short_time(f.last_failure),
            "yes" if d.replayed else "",
        )
    console.print(fit(table, console.width, "stage", "origin", "last failure"))
    console.print(f"{len(letters)} dead letter(s)")


def _letter_row(letter: DeadLetter) -> dict[str, object]:
    f = letter.failure
    row: dict[str, object] = {"id": letter.id, "replayed": letter.replayed, "failure": None}
    if f is not None:
        row["failure"] = {
            "stage": f.stage,
            "type": f.error_type,
            "code": f.code,
            "message": f.message,
            "attempts": f.attempts,
            "original_topic": f.original_topic,
            "original_partition": f.original_partition,
            "original_offset": f.original_offset,
            "first_failure": f.first_failure.isoformat(),
            "last_failure": f.last_failure.isoformat(),
        }
    return row


@dlq_app.command("show")
def dlq_show(
    ctx: typer.Context,
    letter_id: Annotated[str, typer.Argument(metavar="ID", help="partition:offset, from list.")],
) -> None:
    """Show one dead letter: every header, the key and the value."""
    from labelflow.kafka.dlq import read_dead_letters

    found = [d for d in read_dead_letters(_settings(ctx)) if d.id == letter_id]
    if not found:
        raise LabelflowError(f"No dead letter {letter_id}.", hint="see: labelflow dlq list")
    letter = found[0]
    console.print(f"[bold]dead letter {letter.id}[/]  replayed: {letter.replayed}")
    for name, value in letter.headers:
        console.print(f"  {name}: {value.decode(errors='replace')}", highlight=False)
    console.print(f"key:   {letter.key!r}", highlight=False, markup=False)
    console.print(f"value: {letter.value.decode(errors='replace')}", highlight=False, markup=False)


@dlq_app.command("replay")
def dlq_replay(
    ctx: typer.Context,
    stage: Annotated[str | None, _STAGE_OPTION] = None,
    code: Annotated[str | None, _CODE_OPTION] = None,
    since: Annotated[str | None, _SINCE_OPTION] = None,
    ids: Annotated[
        list[str] | None, typer.Option("--id", help="Only this letter (repeatable).")
    ] = None,
    dry_run: Annotated[bool, typer.Option(help="Say what would be replayed.")] = False,
) -> None:
    """Write matching letters back to their original topics, exactly once each."""
    from labelflow.kafka.dlq import replay

    done = replay(_settings(ctx), _dlq_filter(stage, code, since, ids), dry_run=dry_run)
    verb = "would replay" if dry_run else "replayed"
    for d in done:
        assert d.failure is not None
        console.print(f"{verb} {d.id} -> {d.failure.original_topic}", highlight=False)
    console.print(f"{len(done)} letter(s) {verb}.")


def main() -> None:
    """Entry point: run the app, turning a labelflow error into a message and exit code 1
    (never a traceback: a classified error prints its stable code too)."""
    try:
        app()
    except (LabelflowError, ClassifiedError) as exc:
        code = f"{exc.code}: " if isinstance(exc, ClassifiedError) else ""
        err.print(f"[bold red]error:[/] {code}{exc.message}", highlight=False)
        hint = getattr(exc, "hint", None)
        if hint:
            err.print(f"[bold]what to do:[/] {hint}", highlight=False)
        raise SystemExit(1) from None
    except ValidationError as exc:  # the settings: LABELFLOW_* variables or labelflow.toml
        err.print("[bold red]error:[/] invalid labelflow settings:", highlight=False)
        for problem in exc.errors():
            where = ".".join(str(p) for p in problem["loc"])
            err.print(f"  {where}: {problem['msg']}", highlight=False)
        err.print(
            "[bold]what to do:[/] fix the LABELFLOW_* variable or labelflow.toml entry named",
            highlight=False,
        )
        raise SystemExit(1) from None
