"""The local single-node Apache Kafka broker (KRaft, combined broker + controller).

Layout under ``<data_dir>/kafka``::

    server.properties   rewritten on every start from the settings (ports may change)
    log4j2.properties   the broker's logging: a size-rolled broker.log
    data/               the log dirs: topics, committed offsets, transaction state
    logs/broker.log     what the broker logs; logs/jvm.out what the JVM prints itself
    broker.pid          the background process, while it runs

The quorum is static (``controller.quorum.voters``) rather than the dynamic ``--standalone``
format because a static voter set is not written into the metadata log: a later start on other
ports still finds its quorum.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from labelflow.config import Settings
from labelflow.errors import BrokerError, SetupError
from labelflow.kafka.clients import admin_client
from labelflow.kafka.jars import ensure_jars
from labelflow.shutdown import set_parent_death_signal

MIN_JAVA = 17
_MAIN_CLASS = "kafka.Kafka"

_LOG4J2 = """\
status = warn
appender.file.type = RollingFile
appender.file.name = FILE
appender.file.fileName = {log}
appender.file.filePattern = {log}.%i
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
appender.file.policies.type = Policies
appender.file.policies.size.type = SizeBasedTriggeringPolicy
appender.file.policies.size.size = 20MB
appender.file.strategy.type = DefaultRolloverStrategy
appender.file.strategy.max = 3
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = FILE
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.state.name = state.change.logger
logger.state.level = WARN
"""


@dataclass(frozen=True)
class BrokerStatus:
    running: bool
    pid: int | None
    bootstrap: str
    reachable: bool
    data_dir: Path


def java_major_version(java: str) -> int:
    """The major version of a ``java`` executable (8 for "1.8.0_x", 17 for "17.0.1")."""
    proc = subprocess.run([java, "-version"], capture_output=True, text=True, check=False)
    match = re.search(r'version "(\d+)(?:\.(\d+))?', proc.stderr + proc.stdout)
    if not match:
        raise SetupError(
            f"Could not read the version of {java}.",
            hint="install Java 17 or newer (Debian/Ubuntu: sudo apt-get install "
            "openjdk-17-jre-headless)",
        )
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major


def find_java() -> str:
    """The ``java`` to run the broker with: ``$JAVA_HOME/bin/java``, else the one on PATH."""
    java_home = os.environ.get("JAVA_HOME")
    candidate = str(Path(java_home) / "bin" / "java") if java_home else None
    java = candidate if candidate and os.access(candidate, os.X_OK) else shutil.which("java")
    if java is None:
        raise SetupError(
            "Java was not found: the local Kafka broker needs Java 17 or newer.",
            hint="install it (Debian/Ubuntu: sudo apt-get install openjdk-17-jre-headless) "
            "or set JAVA_HOME; or point LABELFLOW_KAFKA_BOOTSTRAP at an existing cluster",
        )
    major = java_major_version(java)
    if major < MIN_JAVA:
        raise SetupError(
            f"{java} is Java {major}; Apache Kafka 4 needs Java {MIN_JAVA} or newer.",
            hint="install a newer JDK and put it first on PATH or in JAVA_HOME",
        )
    return java


def port_is_free(host: str, port: int) -> bool:
    """Whether a listener could bind ``host:port`` now.

    SO_REUSEADDR as the JVM sets it: without it, connections of a just-stopped broker lingering
    in TIME_WAIT would make the port look busy for a minute after ``down``.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def new_cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes, URL-safe base64 without padding.

    Kafka avoids ids starting with '-' because they read as a command-line flag.
    """
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cid.startswith("-"):
            return cid


def _pid_alive(pid: int) -> bool:
    try:
        reaped, _ = os.waitpid(pid, os.WNOHANG)
        if reaped == pid:
            return False  # our own child, and it has exited: reaped now
    except ChildProcessError:
        pass  # not our child; ask the kernel below
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(")")[-1].split()[0] == "Z")


def _wait_until(predicate: Callable[[], bool], timeout_s: float, interval_s: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval_s)
    return predicate()


def _tail(path: Path, lines: int) -> str:
    if not path.exists():
        return ""
    with path.open("rb") as fh:
        fh.seek(0, os.SEEK_END)
        fh.seek(max(0, fh.tell() - 64 * 1024))
        text = fh.read().decode(errors="replace")
    return "\n".join(text.splitlines()[-lines:])


def describe_cluster(settings: Settings, timeout_s: float = 5.0) -> int:
    """Number of brokers the cluster reports; raises if it does not answer in time."""
    admin = admin_client(settings)
    result = admin.describe_cluster(request_timeout=timeout_s).result(timeout=timeout_s + 1)
    return len(result.nodes)


class LocalBroker:
    """Lifecycle of the local broker: ``up``, ``down``, ``status``, ``logs``."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.root = settings.kafka_dir.resolve()
        self.log_dirs = self.root / "data"
        self.logs = self.root / "logs"
        self.pid_file = self.root / "broker.pid"
        self.properties_file = self.root / "server.properties"
        self.log4j_file = self.root / "log4j2.properties"

    @property
    def bootstrap(self) -> str:
        return f"{self.settings.kafka_host}:{self.settings.kafka_port}"

    @property
    def broker_log(self) -> Path:
        return self.logs / "broker.log"

    @property
    def jvm_out(self) -> Path:
        return self.logs / "jvm.out"

    # --- state --------------------------------------------------------------------------
    def pid(self) -> int | None:
        """The broker's pid if it is running (a stale pid file is removed)."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        cmdline = Path(f"/proc/{pid}/cmdline")
        ours = cmdline.exists() and _MAIN_CLASS.encode() in cmdline.read_bytes()
        if ours and _pid_alive(pid):
            return pid
        self.pid_file.unlink(missing_ok=True)
        return None

    def status(self) -> BrokerStatus:
        pid = self.pid()
        reachable = False
        if pid is not None:
            try:
                reachable = describe_cluster(self.settings, timeout_s=3) > 0
            except Exception:  # noqa: BLE001 - any failure means "not reachable"
                reachable = False
        return BrokerStatus(pid is not None, pid, self.bootstrap, reachable, self.root)

    # --- up -----------------------------------------------------------------------------
    def up(self, *, tie_to_parent: bool = False) -> tuple[BrokerStatus, bool]:
        """Start the broker unless it runs; wait until it serves. Returns (status, started).

        ``tie_to_parent``: the kernel stops the broker (SIGTERM) when this process dies, even
        by ``kill -9``; for a broker that belongs to a ``demo`` or ``up``, not one started by
        ``labelflow kafka up``, which must outlive the command."""
        if self.pid() is not None:
            return self.status(), False
        java = find_java()
        for port in (self.settings.kafka_port, self.settings.kafka_controller_port):
            if not port_is_free(self.settings.kafka_host, port):
                raise SetupError(
                    f"Port {self.settings.kafka_host}:{port} is already in use by another "
                    "process, so the local Kafka broker cannot listen on it.",
                    hint="stop that process, or choose other ports with LABELFLOW_KAFKA_PORT "
                    "and LABELFLOW_KAFKA_CONTROLLER_PORT",
                )
        libs = ensure_jars(self.settings.cache_dir, self.settings.kafka_version)
        self._write_config()
        self._format_if_needed(java, libs)
        proc = self._spawn(java, libs, tie_to_parent)
        self.pid_file.write_text(str(proc.pid))
        self._wait_ready(proc)
        return self.status(), True

    def _write_config(self) -> None:
        s = self.settings
        self.logs.mkdir(parents=True, exist_ok=True)
        self.log_dirs.mkdir(parents=True, exist_ok=True)
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "listeners": f"PLAINTEXT://{s.kafka_host}:{s.kafka_port},"
            f"CONTROLLER://{s.kafka_host}:{s.kafka_controller_port}",
            "advertised.listeners": f"PLAINTEXT://{s.kafka_host}:{s.kafka_port}",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "controller.quorum.voters": f"1@{s.kafka_host}:{s.kafka_controller_port}",
            "log.dirs": str(self.log_dirs),
            # One node: internal topics must not ask for more replicas than exist, or
            # consumer groups and transactions fail to initialise.
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "10",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "10",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            # Without this a new group waits 3 s before its first assignment.
            "group.initial.rebalance.delay.ms": "0",
            "auto.create.topics.enable": "false",
            # A worker that died mid-transaction holds back read_committed readers until its
            # transaction is aborted; the default check runs every 10 s on top of the timeout.
            "transaction.abort.timed.out.transaction.cleanup.interval.ms": "1000",
            "num.partitions": str(s.topic_partitions),
            "log.cleaner.dedupe.buffer.size": str(32 * 1024 * 1024),
        }
        self.properties_file.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
        self.log4j_file.write_text(_LOG4J2.format(log=self.broker_log))

    def _classpath(self, libs: Path) -> str:
        # One literal wildcard argument: the JVM expands it, no shell involved.
        return str(libs / "*")

    def _format_if_needed(self, java: str, libs: Path) -> None:
        if (self.log_dirs / "meta.properties").exists():
            return
        cmd = [
            java, "-cp", self._classpath(libs), "kafka.tools.StorageTool", "format",
            "-t", new_cluster_id(), "-c", str(self.properties_file),
        ]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise BrokerError(
                f"Formatting the broker's storage in {self.log_dirs} failed:\n"
                f"{(proc.stdout + proc.stderr).strip()[-2000:]}",
                hint=f"if the folder holds data from another cluster, remove {self.root}",
            )

    def _spawn(self, java: str, libs: Path, tie_to_parent: bool) -> subprocess.Popen[bytes]:
        cmd = [
            java, *self.settings.kafka_heap.split(), "-XX:+UseG1GC",
            "-XX:+ExitOnOutOfMemoryError", "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.log4j_file}",
            "-cp", self._classpath(libs), _MAIN_CLASS, str(self.properties_file),
        ]  # fmt: skip
        with self.jvm_out.open("wb") as out:
            # A new session: the broker outlives the CLI and ignores the terminal's Ctrl-C.
            return subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                cwd=self.root, start_new_session=True,
                preexec_fn=set_parent_death_signal if tie_to_parent else None,
            )  # fmt: skip

    def _wait_ready(self, proc: subprocess.Popen[bytes]) -> None:
        """Wait for an admin describe-cluster to answer; on failure show the log tail."""
        deadline = time.monotonic() + self.settings.kafka_start_timeout_s
        host, port = self.settings.kafka_host, self.settings.kafka_port
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                self.pid_file.unlink(missing_ok=True)
                raise BrokerError(
                    f"The Kafka broker exited with code {proc.returncode} while starting.\n"
                    f"{self._failure_context()}",
                    hint=f"full log: {self.broker_log}",
                )
            # Probe TCP first: librdkafka logs every refused connection loudly.
            with socket.socket() as sock:
                sock.settimeout(0.5)
                listening = sock.connect_ex((host, port)) == 0
            if listening:
                try:
                    if describe_cluster(self.settings, timeout_s=3) > 0:
                        return
                except Exception:  # noqa: BLE001 - still starting
                    pass
            time.sleep(0.2)
        self.down()
        raise BrokerError(
            f"The Kafka broker did not become ready within "
            f"{self.settings.kafka_start_timeout_s:.0f} s.\n{self._failure_context()}",
            hint="raise LABELFLOW_KAFKA_START_TIMEOUT_S on a slow machine, or read "
            f"{self.broker_log}",
        )

    def _failure_context(self) -> str:
        parts = []
        for path in (self.jvm_out, self.broker_log):
            tail = _tail(path, 25)
            if tail:
                parts.append(f"--- last lines of {path.name} ---\n{tail}")
        return "\n".join(parts) or "(the broker wrote no log)"

    # --- down ---------------------------------------------------------------------------
    def down(self, *, force: bool = False) -> str:
        """Stop gracefully (SIGTERM), killing after the stop timeout, or at once with
        ``force`` (Kafka recovers its logs on the next start). Returns what happened."""
        pid = self.pid()
        if pid is None:
            return "not running"
        os.kill(pid, signal.SIGKILL if force else signal.SIGTERM)
        if _wait_until(lambda: not _pid_alive(pid), self.settings.kafka_stop_timeout_s, 0.1):
            outcome = "stopped"
        else:
            os.kill(pid, signal.SIGKILL)
            _wait_until(lambda: not _pid_alive(pid), 10)
            outcome = "killed after the stop timeout"
        self.pid_file.unlink(missing_ok=True)
        return outcome

    # --- logs ---------------------------------------------------------------------------
    def log_tail(self, lines: int = 50) -> str:
        return _tail(self.broker_log, lines)
