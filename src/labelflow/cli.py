"""The ``labelflow`` command line (Typer + Rich)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from labelflow import __version__
from labelflow.config import Settings, get_settings
from labelflow.errors import LabelflowError
from labelflow.kafka.broker import LocalBroker
from labelflow.kafka.clients import admin_client
from labelflow.kafka.topics import declared_topics, ensure_topics, resolve
from labelflow.logs import setup_logging

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


def _settings(ctx: typer.Context) -> Settings:
    return ctx.obj


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
    log_level: Annotated[str, typer.Option(help="DEBUG, INFO, WARNING or ERROR.")] = "WARNING",
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show version.")
    ] = False,
) -> None:
    setup_logging(level=log_level)
    overrides = {"data_dir": data_dir} if data_dir else {}
    ctx.obj = get_settings(**overrides)


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
            nodes = describe_cluster(settings.kafka_client_config())
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
    """Run one worker process of a stage until SIGTERM/SIGINT (exit 0) or a fatal error."""
    from labelflow.kafka import metrics
    from labelflow.kafka.runner import Runner
    from labelflow.stage import load_stage

    runner = Runner(load_stage(stage), _settings(ctx), worker_id=worker_id)
    if metrics_port is not None:
        metrics.serve(metrics_port)
    runner.run()


# --- dlq ----------------------------------------------------------------------------------
dlq_app = typer.Typer(
    help="The dead-letter topic: what failed, why, and replaying it.", no_args_is_help=True
)
app.add_typer(dlq_app, name="dlq")

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
) -> None:
    """List dead letters: id, stage, reason, attempts, origin, last failure, replayed."""
    from labelflow.kafka.dlq import read_dead_letters

    select = _dlq_filter(stage, code, since)
    table = Table("id", "stage", "code", "attempts", "origin", "last failure", "replayed")
    for d in filter(select, read_dead_letters(_settings(ctx))):
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
            f.last_failure.isoformat(timespec="seconds"),
            "yes" if d.replayed else "",
        )
    console.print(table)


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
    """Entry point: run the app, turning a LabelflowError into a message and exit code 1."""
    try:
        app()
    except LabelflowError as exc:
        err.print(f"[bold red]error:[/] {exc.message}", highlight=False)
        if exc.hint:
            err.print(f"[bold]what to do:[/] {exc.hint}", highlight=False)
        raise SystemExit(1) from None
