"""A real Label Studio for integration tests, started headless from its own virtualenv.

``bash scripts/setup.sh --with-labelstudio`` installs Label Studio into
``~/.cache/labelflow/label-studio-<version>/venv`` (its pinned dependencies conflict with
ours, so it never shares ``.venv``). :func:`start_labelstudio` runs
``label-studio start --no-browser`` from there on a free port, with its database, media and
local-files root in a temporary directory, and a fixed admin user and legacy API token so
tests can call the REST API with ``Authorization: Token …``.

Without that virtualenv the tests that need it are skipped, except under ``CI=true``: a green
CI must mean the real server was exercised, so there a missing install fails the run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from support import free_port, missing_prerequisite

VERSION = os.environ.get("LABELFLOW_LABELSTUDIO_VERSION", "1.23.2")
USERNAME = "admin@labelflow.test"
PASSWORD = "labelflow-test-password"
TOKEN = "0123456789abcdef0123456789abcdef01234567"
"""A legacy token is 40 hex characters; Label Studio takes ours instead of making one."""

START_TIMEOUT_S = 240.0
"""First start migrates a fresh database: 20-100 s on a 2-core machine, more under load.
Past four minutes it is not slow but broken, and the log says why."""

STOP_TIMEOUT_S = 30.0


def venv_dir() -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "labelflow" / f"label-studio-{VERSION}" / "venv"


@dataclass(frozen=True)
class LabelStudioServer:
    """A running server: ``url`` answers the REST API with ``token``; files written under
    ``files_root`` are served as ``/data/local-files/?d=<path relative to it>``."""

    url: str
    token: str
    files_root: Path
    log: Path

    def client(self, timeout_s: float = 30.0) -> httpx.Client:
        return httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Token {self.token}"},
            timeout=timeout_s,
        )


def require_installed() -> Path:
    """The Label Studio executable, or skip (fail under CI) when it is not installed."""
    executable = venv_dir() / "bin" / "label-studio"
    if (venv_dir() / ".installed").exists() and executable.exists():
        return executable
    message = (
        f"Label Studio {VERSION} is not installed in {venv_dir()}: "
        "run bash scripts/setup.sh --with-labelstudio"
    )
    missing_prerequisite(message)


@contextmanager
def start_labelstudio(base: Path) -> Iterator[LabelStudioServer]:
    """Start Label Studio with everything under ``base``; stop it (SIGTERM, then SIGKILL)."""
    executable = require_installed()
    port = free_port()
    files_root = base / "files"
    files_root.mkdir(parents=True, exist_ok=True)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("LABEL_STUDIO", "DJANGO"))},
        "LABEL_STUDIO_BASE_DATA_DIR": str(base / "data"),
        "LABEL_STUDIO_USERNAME": USERNAME,
        "LABEL_STUDIO_PASSWORD": PASSWORD,
        "LABEL_STUDIO_USER_TOKEN": TOKEN,
        "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
        # Label Studio refuses to call webhooks on private addresses such as 127.0.0.1.
        "SSRF_PROTECTION_ENABLED": "false",
        # Otherwise every start asks PyPI for a newer release.
        "LATEST_VERSION_CHECK": "false",
        "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED": "true",
        "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": str(files_root),
        "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "true",
    }
    log = base / "label-studio.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(executable), "start", "--no-browser", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=base,
            start_new_session=True,  # its own process group: stopping it stops its children
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, process, log)
        yield LabelStudioServer(url=url, token=TOKEN, files_root=files_root, log=log)
    finally:
        _stop(process)


def _wait_healthy(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"Label Studio exited with {process.returncode}:\n{_tail(log)}")
        try:
            if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(1)
    pytest.fail(f"Label Studio did not answer /health in {START_TIMEOUT_S} s:\n{_tail(log)}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(STOP_TIMEOUT_S)


def _tail(log: Path, chars: int = 4000) -> str:
    return log.read_text(errors="replace")[-chars:] if log.exists() else "(no log)"
