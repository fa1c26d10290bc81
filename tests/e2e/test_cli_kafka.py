"""``labelflow kafka …`` end to end, as a person runs it: separate processes, real broker."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e


def labelflow(*args: str, env: dict[str, str], timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "labelflow", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


TRANSACTIONAL_ROUND_TRIP = textwrap.dedent(
    """
    import sys, uuid
    from confluent_kafka import Consumer, Producer
    from confluent_kafka.admin import AdminClient, NewTopic
    bootstrap, topic = sys.argv[1], "roundtrip"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(30)
    p = Producer({"bootstrap.servers": bootstrap, "transactional.id": uuid.uuid4().hex})
    p.init_transactions(30)
    p.begin_transaction(); p.produce(topic, b"ghost"); p.flush(); p.abort_transaction(30)
    p.begin_transaction(); [p.produce(topic, b"r%d" % i) for i in range(3)]
    p.commit_transaction(30)
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": uuid.uuid4().hex,
                  "isolation.level": "read_committed", "auto.offset.reset": "earliest"})
    c.subscribe([topic])
    got = []
    for _ in range(200):
        m = c.poll(0.2)
        if m is not None and not m.error():
            got.append(m.value().decode())
        if len(got) == 3 and c.poll(1.0) is None:
            break
    print(",".join(got))
    """
)


def test_kafka_up_serves_transactions_to_other_processes_and_down_stops_it(
    cli_env: dict[str, str],
) -> None:
    port = cli_env["LABELFLOW_KAFKA_PORT"]
    try:
        up = labelflow("kafka", "up", env=cli_env)
        assert up.returncode == 0, up.stderr
        assert f"127.0.0.1:{port}" in up.stdout

        again = labelflow("kafka", "up", env=cli_env)
        assert again.returncode == 0
        assert "already running" in again.stdout

        status = labelflow("kafka", "status", env=cli_env)
        assert status.returncode == 0
        assert "answering" in status.stdout

        ensure = labelflow("topics", "ensure", env=cli_env)
        assert ensure.returncode == 0, ensure.stderr
        assert "created" in ensure.stdout
        assert "created" not in labelflow("topics", "ensure", env=cli_env).stdout

        roundtrip = subprocess.run(
            [sys.executable, "-c", TRANSACTIONAL_ROUND_TRIP, f"127.0.0.1:{port}"],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert roundtrip.returncode == 0, roundtrip.stderr
        assert roundtrip.stdout.strip() == "r0,r1,r2"

        logs = labelflow("kafka", "logs", "-n", "5", env=cli_env)
        assert logs.returncode == 0
        assert logs.stdout.strip()
    finally:
        down = labelflow("kafka", "down", env=cli_env)
    assert down.returncode == 0
    assert "stopped" in down.stdout
    assert labelflow("kafka", "status", env=cli_env).returncode == 1


def test_missing_java_is_a_clear_error(cli_env: dict[str, str], tmp_path: Path) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    cli_env["PATH"] = str(empty)
    cli_env.pop("JAVA_HOME", None)
    result = labelflow("kafka", "up", env=cli_env)
    assert result.returncode == 1
    assert "Java was not found" in result.stderr
    assert "openjdk-17" in result.stderr  # says what to install


def test_busy_port_is_a_clear_error(cli_env: dict[str, str]) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        busy = squatter.getsockname()[1]
        cli_env["LABELFLOW_KAFKA_PORT"] = str(busy)
        result = labelflow("kafka", "up", env=cli_env)
    assert result.returncode == 1
    assert f"127.0.0.1:{busy} is already in use" in result.stderr
    assert "LABELFLOW_KAFKA_PORT" in result.stderr


def test_missing_maven_without_cached_jars_is_a_clear_error(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    java_only = tmp_path / "java-only"
    java_only.mkdir()
    java = subprocess.run(["which", "java"], capture_output=True, text=True, check=True)
    (java_only / "java").symlink_to(os.path.realpath(java.stdout.strip()))
    cli_env["PATH"] = str(java_only)
    cli_env["LABELFLOW_CACHE_DIR"] = str(tmp_path / "empty-cache")
    result = labelflow("kafka", "up", env=cli_env)
    assert result.returncode == 1
    assert "Maven ('mvn')" in result.stderr
    assert "apt-get install maven" in result.stderr


def test_external_bootstrap_starts_nothing(cli_env: dict[str, str]) -> None:
    cli_env["LABELFLOW_KAFKA_BOOTSTRAP"] = "kafka.example.internal:9092"
    result = labelflow("kafka", "up", env=cli_env)
    assert result.returncode == 0
    assert "kafka.example.internal:9092" in result.stdout
    assert "no local broker is started" in result.stdout
    assert not (Path(cli_env["LABELFLOW_DATA_DIR"]) / "kafka" / "broker.pid").exists()
