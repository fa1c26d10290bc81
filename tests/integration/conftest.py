"""Database fixtures for integration tests: real SQLite and real PostgreSQL.

PostgreSQL comes from ``LABELFLOW_TEST_POSTGRES_URL`` when set (a role that may create
databases), otherwise from a private throwaway cluster started for the session from the
PostgreSQL binaries on this machine (``/usr/lib/postgresql/*/bin`` or ``PATH``): ``initdb``
into a temporary directory, ``postgres`` on a free port of 127.0.0.1 with its socket in that
directory, stopped and removed at the end. PostgreSQL refuses to run as root, so as root the
cluster belongs to the ``postgres`` system user and its commands run through ``runuser``.
Each test gets a fresh database on that server.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import make_url

from support import free_port, missing_prerequisite

POSTGRES_START_TIMEOUT_S = 60.0
"""initdb + start on a slow CI disk takes seconds; past a minute something is broken."""


@dataclass(frozen=True)
class PostgresServer:
    """A server the tests may create databases on: ``url`` names its maintenance database."""

    url: str

    def admin_conninfo(self) -> str:
        return make_url(self.url).set(drivername="postgresql").render_as_string(False)


def _postgres_bin_dir() -> Path | None:
    """The newest Debian-style install (``/usr/lib/postgresql/<major>/bin``), else ``PATH``."""
    debian = [Path(p).parent for p in glob.glob("/usr/lib/postgresql/*/bin/initdb")]
    debian.sort(
        key=lambda bin_dir: int(bin_dir.parent.name) if bin_dir.parent.name.isdigit() else 0
    )
    on_path = shutil.which("initdb")
    if debian:
        return debian[-1]
    return Path(on_path).parent if on_path else None


def _owner_prefix(base: Path) -> list[str]:
    """How to run a command as the cluster's owner: as-is, or as ``postgres`` when root."""
    if os.geteuid() != 0:
        return []
    owner = pwd.getpwnam("postgres")
    os.chown(base, owner.pw_uid, owner.pw_gid)
    return ["runuser", "-u", "postgres", "--"]


def _run(as_owner: list[str], *args: str, check: bool = True) -> None:
    subprocess.run(
        [*as_owner, *args], check=check, capture_output=True, timeout=POSTGRES_START_TIMEOUT_S
    )


def _start_cluster(bin_dir: Path, base: Path, as_owner: list[str], port: int) -> None:
    data = str(base / "data")
    _run(
        as_owner,
        str(bin_dir / "initdb"),
        "-D",
        data,
        "-U",
        "labelflow",
        "--auth=trust",
        "--no-sync",
    )
    # Durability settings off: a test cluster that loses data on a crash costs nothing.
    options = (
        f"-p {port} -h 127.0.0.1 -k {base} "
        "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=100"
    )
    log = str(base / "postgres.log")
    timeout = str(int(POSTGRES_START_TIMEOUT_S))
    _run(
        as_owner,
        str(bin_dir / "pg_ctl"),
        "-D",
        data,
        "-l",
        log,
        "-o",
        options,
        "-w",
        "-t",
        timeout,
        "start",
    )


def _wait_ready(conninfo: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with psycopg.connect(conninfo, connect_timeout=2):
                return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    external = os.environ.get("LABELFLOW_TEST_POSTGRES_URL")
    if external:
        yield PostgresServer(external)
        return
    bin_dir = _postgres_bin_dir()
    if bin_dir is None:
        missing_prerequisite(
            "no PostgreSQL binaries (initdb) found and LABELFLOW_TEST_POSTGRES_URL unset"
        )
    # Not under pytest's tmp dir: that is private to the current user, and as root the
    # cluster runs as ``postgres``, which must be able to reach its directory.
    base = Path(tempfile.mkdtemp(prefix="labelflow-pg-"))
    port = free_port()
    as_owner = _owner_prefix(base)
    try:
        _start_cluster(bin_dir, base, as_owner, port)
        server = PostgresServer(f"postgresql+psycopg://labelflow@127.0.0.1:{port}/postgres")
        _wait_ready(server.admin_conninfo(), POSTGRES_START_TIMEOUT_S)
        yield server
    finally:
        if (base / "data" / "postmaster.pid").exists():
            pg_ctl = str(bin_dir / "pg_ctl")
            _run(
                as_owner, pg_ctl, "-D", str(base / "data"), "-m", "fast", "-w", "stop", check=False
            )
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """A fresh, empty database on the test server, dropped afterwards."""
    name = f"lf_{uuid.uuid4().hex[:12]}"
    admin = postgres_server.admin_conninfo()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield make_url(postgres_server.url).set(database=name).render_as_string(False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def catalog_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty catalog database of each kind (the schema is not created)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'catalog.db'}"
    return request.getfixturevalue("postgres_url")
