"""Fixtures for running the ``labelflow`` command as a person would."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from support import free_port


@pytest.fixture
def cli_env(tmp_path: Path) -> dict[str, str]:
    """The caller's environment without any ``LABELFLOW_*`` setting, plus a private data dir
    and free broker ports (the user's Kafka jar cache stays shared), and no config file."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LABELFLOW_")}
    env.update(
        LABELFLOW_DATA_DIR=str(tmp_path / "data"),
        LABELFLOW_KAFKA_PORT=str(free_port()),
        LABELFLOW_KAFKA_CONTROLLER_PORT=str(free_port()),
        LABELFLOW_CONFIG_FILE=str(tmp_path / "no-config.toml"),
        COLUMNS="200",
    )
    return env
