"""``labelflow reconcile`` as a person runs it: a source nothing was ever ingested from is
reconciled into the catalog through the running pipeline, its run is recorded, and its
lineage events wait in Kafka for the forwarder."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from typer.testing import CliRunner

from labelflow.cli import app
from labelflow.errors import LabelflowError
from labelflow.kafka.quarantine import read_quarantine
from labelflow.sources.synthetic import SyntheticConfig, generate
from pipeline_support import RunningPipeline, catalog_problems, worker_env
from support import wait_for

pytestmark = pytest.mark.integration

SEED, TASKS = 12, 15


def test_reconcile_fills_an_empty_catalog_from_the_source(
    pipeline: RunningPipeline, tmp_path
) -> None:
    env = worker_env(pipeline.settings)
    # Topics created moments ago may not have a leader yet; reconcile reads the quarantine.
    wait_for(_answers(pipeline), 30, "the quarantine topic to answer")
    source = ["--source", "synthetic", "--seed", str(SEED), "--tasks", str(TASKS)]
    runner = CliRunner()

    dry = runner.invoke(app, ["reconcile", *source, "--dry-run", "--json"], env=env)
    assert dry.exit_code == 0, dry.output
    planned = json.loads(dry.stdout)
    assert planned["dry_run"] and planned["repairs"] == 0
    assert planned["counts"]["missing"] == TASKS

    done = runner.invoke(app, ["reconcile", *source, "--json"], env=env)
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout)["repairs"] == TASKS

    expected = generate(SyntheticConfig(seed=SEED, tasks=TASKS)).expected
    catalog = pipeline.catalog
    pipeline.eventually(lambda: catalog_problems(catalog, expected), 90, "the repairs")

    runs = runner.invoke(app, ["reconcile", "runs", "--json"], env=env)
    assert [r["dry_run"] for r in json.loads(runs.stdout)] == [False, True]

    events = tmp_path / "lineage.jsonl"
    forwarded = runner.invoke(app, ["lineage", "forward", "--file", str(events)], env=env)
    assert forwarded.exit_code == 0, forwarded.output
    kinds = [json.loads(line)["eventType"] for line in events.read_text().splitlines()]
    assert kinds == ["START", "COMPLETE"]  # the dry run emits none


def _answers(pipeline: RunningPipeline) -> Callable[[], bool]:
    def answers() -> bool:
        try:
            read_quarantine(pipeline.settings, timeout_s=5)
        except LabelflowError:
            return False
        return True

    return answers
