"""Broker prerequisites that need no broker: Java detection, ports, cluster ids."""

from __future__ import annotations

import re
import socket
import stat
from pathlib import Path

import pytest

from labelflow.errors import SetupError
from labelflow.kafka.broker import find_java, java_major_version, new_cluster_id, port_is_free


def _fake_java(tmp_path: Path, version_line: str) -> Path:
    """A stand-in ``java`` that prints a version banner the way real JDKs do (on stderr)."""
    java = tmp_path / "java"
    java.write_text(f"#!/bin/sh\necho '{version_line}' >&2\n")
    java.chmod(java.stat().st_mode | stat.S_IXUSR)
    return java


@pytest.mark.parametrize(
    ("banner", "major"),
    [
        ('openjdk version "17.0.15" 2025-04-15', 17),
        ('openjdk version "21" 2023-09-19', 21),
        ('java version "1.8.0_392"', 8),
    ],
)
def test_java_major_version_reads_real_banners(tmp_path: Path, banner: str, major: int) -> None:
    assert java_major_version(str(_fake_java(tmp_path, banner))) == major


def test_old_java_is_refused_with_a_hint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_java(tmp_path, 'openjdk version "11.0.2" 2019-01-15')
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(SetupError, match="Java 11") as info:
        find_java()
    assert "JAVA_HOME" in (info.value.hint or "")


def test_missing_java_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(SetupError, match="Java was not found"):
        find_java()


def test_port_is_free_sees_a_listening_socket() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        assert not port_is_free("127.0.0.1", sock.getsockname()[1])


def test_cluster_ids_look_like_kafka_uuids() -> None:
    ids = {new_cluster_id() for _ in range(200)}
    assert len(ids) == 200
    assert all(re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_-]{21}", i) for i in ids)
