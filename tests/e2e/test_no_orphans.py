"""A demo that is hung up on or killed leaves no labelflow process behind.

Observed before: a closed terminal (SIGHUP) left the broker and every worker running, and the
next demo on the same data directory shared their consumer groups and transactional ids. Now
the demo stops in order on SIGHUP, and on SIGKILL its workers and broker stop by themselves
(the kernel's parent-death signal, and the workers' watch on their supervisor).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from support import wait_for

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        bool(os.environ.get("LABELFLOW_KAFKA_BOOTSTRAP")), reason="the demo starts its own broker"
    ),
]


def _processes_using(data_dir: Path) -> list[int]:
    """Pids of processes whose command line or environment names ``data_dir``."""
    needle = str(data_dir).encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            seen = (entry / "cmdline").read_bytes() + (entry / "environ").read_bytes()
            state = (entry / "stat").read_text().split(") ", 1)[1][:1]
        except OSError:
            continue  # gone meanwhile, or not ours to read
        if needle in seen and state != "Z":
            found.append(int(entry.name))
    return found


@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGKILL], ids=["hangup", "kill"])
def test_demo_leaves_no_process_behind(
    tmp_path: Path, cli_env: dict[str, str], sig: signal.Signals
) -> None:
    data_dir = Path(cli_env["LABELFLOW_DATA_DIR"])
    log = (tmp_path / "demo.log").open("wb")
    demo = subprocess.Popen(
        [sys.executable, "-m", "labelflow", "demo", "--duration", "120", "--rate", "10"],
        env=cli_env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        logs = data_dir / "logs"

        def workers_running() -> bool:
            started = [p for p in logs.glob("*.log") if b"worker started" in p.read_bytes()]
            return len(started) == 3

        wait_for(workers_running, 180, "the demo's three workers to start")
        assert len(_processes_using(data_dir)) >= 5  # demo, broker, three workers

        demo.send_signal(sig)
        demo.wait(timeout=120)
        wait_for(
            lambda: _processes_using(data_dir) == [],
            60,
            f"every process of the demo to end after {sig.name}",
        )
    finally:
        if demo.poll() is None:
            demo.kill()
        for pid in _processes_using(data_dir):
            os.kill(pid, signal.SIGKILL)
