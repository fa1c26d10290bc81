"""``labelflow up`` end to end: its own broker and workers, the API answering, a clean stop."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from support import free_port, wait_for

pytestmark = pytest.mark.e2e

START_TIMEOUT_S = 180.0
"""A first start may fetch the Kafka jars; a cached one takes seconds."""


def _healthy(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def _children(pid: int) -> list[int]:
    """Direct children of ``pid`` (Linux /proc): the workers and the broker it started."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(
    bool(os.environ.get("LABELFLOW_KAFKA_BOOTSTRAP")), reason="up starts its own broker here"
)
def test_up_serves_the_api_and_stops_everything_on_sigterm(
    tmp_path: Path, cli_env: dict[str, str]
) -> None:
    data = Path(cli_env["LABELFLOW_DATA_DIR"])
    port = free_port()
    env = cli_env
    log = tmp_path / "up.log"
    with log.open("wb") as out:
        up = subprocess.Popen(
            [sys.executable, "-m", "labelflow", "up", "--port", str(port)],
            env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        wait_for(
            lambda: _healthy(f"http://127.0.0.1:{port}/healthz") or up.poll() is not None,
            START_TIMEOUT_S,
            "labelflow up to answer /healthz",
        )
        assert up.poll() is None, log.read_text()[-3000:]
        children = _children(up.pid)
        assert len(children) == 4, children  # the broker and one worker per pipeline stage
        up.send_signal(signal.SIGTERM)
        assert up.wait(timeout=120) == 0, log.read_text()[-3000:]
    finally:
        if up.poll() is None:
            up.kill()
    assert not [pid for pid in children if _running(pid)]  # workers and broker are gone
    assert not (data / "kafka" / "broker.pid").exists()
    assert "labelflow stopped" in log.read_text()
