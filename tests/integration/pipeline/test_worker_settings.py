"""A worker uses the one settings object of its process: ``labelflow --data-dir X run STAGE``
puts the catalog and the blobs under X, not under the working directory's default."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from labelflow.catalog.store import Catalog
from labelflow.config import Settings
from labelflow.kafka.clients import admin_client
from labelflow.kafka.ensure import ensure_topics
from labelflow.kafka.topics import declared_topics, resolve
from labelflow.sources.publish import RawPublisher
from labelflow.sources.synthetic import SyntheticConfig, generate
from pipeline_support import worker_env
from support import wait_for

pytestmark = pytest.mark.integration


def test_data_dir_option_of_run_puts_catalog_and_blobs_there(
    kafka_settings: Settings, tmp_path: Path
) -> None:
    elsewhere, cwd = tmp_path / "elsewhere", tmp_path / "cwd"
    cwd.mkdir()
    settings = kafka_settings.model_copy(
        update={"topic_prefix": f"dd-{uuid.uuid4().hex[:8]}.", "data_dir": elsewhere}
    )
    ensure_topics(admin_client(settings), resolve(declared_topics(settings), settings))
    history = generate(SyntheticConfig(seed=5, tasks=6, bad_fraction=0, delete_fraction=0))
    publisher = RawPublisher(settings)
    for delivery in history.deliveries:
        publisher.publish_raw(delivery.task_id, delivery.value)
    publisher.flush()

    env = worker_env(settings)
    for name in ("LABELFLOW_DATA_DIR", "LABELFLOW_CATALOG_URL"):
        env.pop(name)  # only the command-line option says where the data lives
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "labelflow", "--data-dir", str(elsewhere), "run", stage],
            cwd=cwd,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for stage in ("validate", "materialize", "commit")
    ]
    live = sum(t.sample for t in history.expected.values())
    try:
        catalog_file = elsewhere / "catalog.db"
        wait_for(catalog_file.exists, 60, "the catalog under --data-dir")
        with Catalog(f"sqlite:///{catalog_file}") as catalog:
            catalog.migrate()  # the workers may still be creating it
            wait_for(lambda: catalog.count() >= live, 120, f"{live} samples in the catalog")
    finally:
        for worker in workers:
            worker.terminate()
        codes = [worker.wait(timeout=60) for worker in workers]
    assert codes == [0, 0, 0]
    assert any((elsewhere / "blobs").rglob("*")), "no blob under --data-dir"
    assert not (cwd / ".labelflow").exists(), "a worker wrote to the default data dir"
