"""Running labelflow on one machine: ``labelflow up`` and what it shares with the demo.

:class:`LocalPipeline` is the part both need: the broker (unless an external cluster is
configured), the declared topics, the migrated catalog and the supervised stage workers, and
stopping them again in the reverse order. :func:`serve` adds the API server and keeps it all
running until SIGTERM, SIGHUP or Ctrl-C; a second one stops everything at once.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import uvicorn
from rich.console import Console

from labelflow.api.app import create_app
from labelflow.catalog.store import Catalog
from labelflow.config import Settings
from labelflow.errors import LabelflowError
from labelflow.kafka.broker import LocalBroker
from labelflow.kafka.clients import admin_client
from labelflow.kafka.ensure import ensure_topics
from labelflow.kafka.topics import declared_topics, resolve
from labelflow.reconcile.reconciler import start_reconciling
from labelflow.shutdown import ForcedStop, stop_on_signals
from labelflow.sources.labelstudio_sync import start_following
from labelflow.stages import PIPELINE_STAGES
from labelflow.supervisor import Supervisor

CHECK_INTERVAL_S = 1.0
"""How often ``up`` looks for dead workers: a crashed worker's partitions wait at most this
long (plus its restart backoff) for a replacement."""

API_START_TIMEOUT_S = 30.0
"""Bound on the API server's startup; past it something is wrong with the app, not slow."""

API_STOP_TIMEOUT_S = 15.0
"""Bound on the API server finishing its open requests when ``up`` stops."""


@dataclass
class LocalPipeline:
    """The broker, topics, catalog and stage workers, started and stopped together.

    ``stages`` maps a stage name to its number of worker processes. Only a broker this object
    started is stopped again: one that was already running belongs to someone else.
    """

    settings: Settings
    stages: dict[str, int]
    _catalog: Catalog | None = None
    _supervisor: Supervisor | None = None
    _broker: LocalBroker | None = None
    _exit_codes: dict[str, int | None] | None = None

    def start(self, console: Console) -> None:
        """1. the local broker (unless external), 2. the topics, 3. the catalog schema,
        4. the workers. On a failure, whatever was started is stopped again."""
        settings = self.settings
        try:
            # 1.
            if settings.uses_local_broker:
                broker = LocalBroker(settings)
                with console.status("Starting Kafka (the first run fetches its jars with Maven)…"):
                    # Tied to this process: a killed demo or ``up`` leaves no broker behind.
                    _, started = broker.up(tie_to_parent=True)
                self._broker = broker if started else None
            # 2.
            topics = resolve(declared_topics(settings), settings)
            for drift in ensure_topics(admin_client(settings), topics).drifts:
                console.print(f"[yellow]topic {drift.topic} differs: {drift.setting}[/]")
            # 3.
            self._catalog = Catalog(settings.resolved_catalog_url)
            self._catalog.migrate()
            # 4.
            # What this process was told on its command line, the workers are told too.
            env = dict(
                os.environ,
                LABELFLOW_DATA_DIR=str(settings.data_dir.resolve()),
                LABELFLOW_MATERIALIZE_THREADS=str(settings.materialize_threads),
            )
            if settings.uses_local_broker:
                env["LABELFLOW_KAFKA_PORT"] = str(settings.kafka_port)
            self._supervisor = Supervisor(self.stages, log_dir=self.log_dir, env=env)
            self._supervisor.start()
        except BaseException:
            self.close(console)
            raise

    @property
    def log_dir(self) -> Path:
        return self.settings.data_dir / "logs"

    @property
    def catalog(self) -> Catalog:
        if self._catalog is None:
            raise RuntimeError("the pipeline is not started")
        return self._catalog

    @property
    def supervisor(self) -> Supervisor:
        if self._supervisor is None:
            raise RuntimeError("the pipeline is not started")
        return self._supervisor

    def stop_workers(self, *, force: bool = False) -> dict[str, int | None]:
        """Stop every worker gracefully, or kill them with ``force`` (once); their exit codes
        by worker id."""
        if self._exit_codes is None:
            supervisor = self._supervisor
            if supervisor is None:
                self._exit_codes = {}
            else:
                self._exit_codes = supervisor.kill() if force else supervisor.stop()
        return self._exit_codes

    def close(self, console: Console, *, force: bool = False) -> None:
        """Stop the workers, close the catalog and stop the broker if this started it; with
        ``force`` (a second Ctrl-C) nothing waits for a graceful stop. Safe to call twice."""
        self.stop_workers(force=force)
        if self._catalog is not None:
            self._catalog.close()
            self._catalog = None
        if self._broker is not None:
            with console.status("Stopping the Kafka broker labelflow started…"):
                self._broker.down(force=force)
            self._broker = None


def stopped_cleanly(exit_code: int | None) -> bool:
    """Whether a worker's exit code after :meth:`LocalPipeline.stop_workers` is a clean stop:
    0, or killed by that very SIGTERM before it installed its handler, which a worker does
    before it begins its first transaction, so it had nothing to finish."""
    return exit_code in (0, -signal.SIGTERM)


def up_stages(settings: Settings, workers: int) -> dict[str, int]:
    """What ``labelflow up`` runs: the pipeline, plus the sources that are configured."""
    names = PIPELINE_STAGES + (("labelstudio",) if settings.uses_labelstudio else ())
    return dict.fromkeys(names, workers)


def serve(
    settings: Settings, console: Console, *, host: str, port: int, workers: int = 1
) -> dict[str, int | None]:
    """Run the pipeline and the API until SIGTERM or SIGINT; return the workers' exit codes.

    The API's socket is bound before anything starts, so a port in use fails at once instead
    of after the broker came up.
    """
    listener = _bind(host, port)
    stop = threading.Event()
    pipeline = LocalPipeline(settings, up_stages(settings, workers))
    with stop_on_signals(stop.set), closing(listener):
        pipeline.start(console)  # on a failure it stops what it started
        forced = False
        try:
            app = create_app(settings, pipeline.catalog)
            server = uvicorn.Server(uvicorn.Config(app, log_config=None, lifespan="off"))
            api = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, name="api")
            api.start()
            following = start_following(settings, stop)  # Label Studio: backfill, then poll
            reconciling = start_reconciling(settings, stop)  # every reconcile.interval_s
            try:
                _wait_started(server, api)
                console.print(
                    f"labelflow is up: API on http://{host}:{listener.getsockname()[1]}, stages "
                    f"{', '.join(pipeline.stages)}; logs in {pipeline.log_dir}. Ctrl-C stops it."
                )
                while not stop.wait(CHECK_INTERVAL_S):
                    pipeline.supervisor.check()
                    if not api.is_alive():
                        raise LabelflowError("The API server stopped unexpectedly.")
            finally:
                server.should_exit = True
                api.join(API_STOP_TIMEOUT_S)
                stop.set()
                if following is not None:
                    following.join(API_STOP_TIMEOUT_S)
                if reconciling is not None:
                    reconciling.join(API_STOP_TIMEOUT_S)
        except ForcedStop:
            forced = True
            raise
        finally:
            pipeline.close(console, force=forced)
    return pipeline.stop_workers()


def _bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise LabelflowError(
            f"The API cannot listen on {host}:{port}: {exc.strerror}",
            hint="pick another with --port, or stop what uses it",
        ) from None
    return sock


def _wait_started(server: uvicorn.Server, thread: threading.Thread) -> None:
    deadline = time.monotonic() + API_START_TIMEOUT_S
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise LabelflowError("The API server did not start; see the log above.")
        time.sleep(0.05)
