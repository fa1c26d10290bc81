"""Keeps the pipeline's worker processes running: start, restart on crash, stop gracefully.

Each worker is a plain ``labelflow run STAGE`` process, exactly what a deployment would run
per replica, so the demo and ``labelflow up`` exercise the production path. A worker that exits
non-zero (fenced, fatal producer error, killed) is restarted with capped exponential backoff:
its uncommitted batch was aborted, so the restart redoes it — no person needs to step in.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from labelflow.watchdog import EXIT_HUNG

log = logging.getLogger(__name__)

RESTART_BACKOFF_S = (1.0, 2.0, 5.0, 10.0, 30.0)
"""Delays before restarting a worker that keeps crashing: quick for a one-off crash, slow
enough that a worker failing on every start does not spin a CPU and flood the logs."""

STABLE_AFTER_S = 60.0
"""A worker that ran this long before exiting starts its backoff from the beginning again."""


@dataclass
class Worker:
    """One supervised process: which stage, which replica, its process and its history."""

    stage: str
    replica: int
    log_file: Path
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restarts: int = 0
    crashes_in_a_row: int = 0
    restart_at: float | None = None

    @property
    def worker_id(self) -> str:
        return f"{self.stage}-{self.replica}"


@dataclass
class Supervisor:
    """Runs ``replicas`` workers of each stage as child processes of this one."""

    stages: dict[str, int]
    log_dir: Path
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    workers: list[Worker] = field(default_factory=list)

    def start(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for stage, replicas in self.stages.items():
            for replica in range(replicas):
                worker = Worker(stage, replica, self.log_dir / f"{stage}-{replica}.log")
                self.workers.append(worker)
                self._spawn(worker)

    def _spawn(self, worker: Worker) -> None:
        cmd = [sys.executable, "-m", "labelflow", "run", worker.stage]
        env = {
            # A worker's log is read after the fact: keep detail unless told otherwise.
            "LABELFLOW_LOG_LEVEL": "INFO",
            **self.env,
            "LABELFLOW_WORKER_ID": worker.worker_id,
            "LABELFLOW_LOG_FORMAT": "json",
            # The worker stops itself when this process is gone (even after a kill -9).
            "LABELFLOW_SUPERVISOR_PID": str(os.getpid()),
        }
        with worker.log_file.open("ab") as out:
            # Own process group: a Ctrl-C in the terminal reaches the supervisor only, which
            # then stops workers in order instead of all of them dying mid-batch at once.
            worker.process = subprocess.Popen(
                cmd,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
            )
        worker.started_at = time.monotonic()
        worker.restart_at = None
        log.info("worker started", extra={"worker": worker.worker_id, "pid": worker.process.pid})

    def check(self) -> list[str]:
        """Restart workers that died; return the ids restarted now. Call this periodically."""
        now = time.monotonic()
        restarted = []
        for worker in self.workers:
            proc = worker.process
            if proc is None or proc.poll() is None:
                continue
            if worker.restart_at is None:
                ran_for = now - worker.started_at
                worker.crashes_in_a_row = (
                    1 if ran_for > STABLE_AFTER_S else (worker.crashes_in_a_row + 1)
                )
                delay = RESTART_BACKOFF_S[min(worker.crashes_in_a_row, len(RESTART_BACKOFF_S)) - 1]
                worker.restart_at = now + delay
                log.warning(
                    "worker exited; restarting",
                    extra={
                        "worker": worker.worker_id,
                        "exit_code": proc.returncode,
                        "why": _exit_reason(proc.returncode),
                        "restart_in_s": delay,
                        "log": str(worker.log_file),
                    },
                )
            if now >= worker.restart_at:
                worker.restarts += 1
                self._spawn(worker)
                restarted.append(worker.worker_id)
        return restarted

    def alive(self) -> int:
        return sum(1 for w in self.workers if w.process and w.process.poll() is None)

    def kill(self) -> dict[str, int | None]:
        """SIGKILL every worker at once (a second Ctrl-C): their open transactions are aborted
        by the broker and redone by the next workers. Returns exit codes by worker id."""
        for worker in self.workers:
            if worker.process and worker.process.poll() is None:
                worker.process.kill()
        for worker in self.workers:
            if worker.process:
                worker.process.wait()
        return {w.worker_id: (w.process.returncode if w.process else None) for w in self.workers}

    def stop(self, timeout_s: float = 30.0) -> dict[str, int | None]:
        """SIGTERM every worker (each commits or aborts its batch and leaves its group), then
        SIGKILL what is still running after ``timeout_s``. Returns exit codes by worker id."""
        running = [w for w in self.workers if w.process and w.process.poll() is None]
        for worker in running:
            worker.process.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
        deadline = time.monotonic() + timeout_s
        for worker in running:
            try:
                worker.process.wait(max(0.1, deadline - time.monotonic()))  # type: ignore[union-attr]
            except subprocess.TimeoutExpired:
                log.warning(
                    "worker did not stop in time; killing", extra={"worker": worker.worker_id}
                )
                worker.process.kill()  # type: ignore[union-attr]
                worker.process.wait()  # type: ignore[union-attr]
        return {w.worker_id: (w.process.returncode if w.process else None) for w in self.workers}


def _exit_reason(code: int | None) -> str:
    """What a worker's exit code says, for the restart log line."""
    if code is not None and code < 0:
        return f"killed by {signal.Signals(-code).name}"
    return {
        EXIT_HUNG: "a call outlived its bound (broker unreachable?); restarted to recover",
        1: "fatal error (fenced, stalled, or a start-up failure): see its log",
    }.get(code or 0, "exited")
