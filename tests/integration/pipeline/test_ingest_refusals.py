"""``labelflow ingest`` on files with bad tasks, and ``labelflow quarantine``, as a person runs
them against a real broker: bad tasks are quarantined once with their own codes, the good ones
are sent, oversized records are refused whichever limit catches them, no command prints a
traceback, list views fit 80 columns, and a held revision is re-run exactly once."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from bad_files import SPEC
from labelflow.config import Settings
from labelflow.events import decode, encode
from labelflow.kafka import retry
from labelflow.kafka.clients import admin_client, producer
from labelflow.kafka.ensure import ensure_topics
from labelflow.kafka.quarantine import read_quarantine
from labelflow.kafka.topics import Topic, declared_topics, resolve, topic_name
from labelflow.model import AnnotationEvent, Quarantined, Reason, Status
from pipeline_support import set_topic_config, worker_env
from runtime_support import Collector

pytestmark = pytest.mark.integration

BROKER_RECORD_LIMIT = 300_000
"""The raw topic's own limit in this test, below the client's and labelflow's: a record the
broker alone refuses must still be quarantined, not crash ingest."""


@pytest.fixture
def settings(kafka_settings: Settings, tmp_path: Path) -> Settings:
    ours = kafka_settings.model_copy(
        update={
            "topic_prefix": f"{kafka_settings.topic_prefix}ing-{uuid.uuid4().hex[:8]}.",
            "data_dir": tmp_path / "data",
        }
    )
    ensure_topics(admin_client(ours), resolve(declared_topics(ours), ours))
    raw = topic_name(Topic.RAW, ours)
    set_topic_config(ours, raw, "max.message.bytes", str(BROKER_RECORD_LIMIT))
    return ours


def labelflow(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(worker_env(settings), COLUMNS="80")
    env.pop("LINES", None)
    return subprocess.run(
        [sys.executable, "-m", "labelflow", *args],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def _task(task_id: int, **changes: Any) -> dict[str, Any]:
    task = copy.deepcopy(SPEC["labelstudio_task"])
    task["id"] = task_id
    for path, value in changes.items():
        node = task
        *parents, last = path.split("/")
        for key in parents:
            node = node[int(key) if key.isdigit() else key]
        node[last] = value
    return task


EXPORT = [
    _task(1),
    _task(2, **{"annotations/0/result/0/value/polygonlabels": []}),
    _task(3),
    _task(4, annotations="none"),
    _task(5, **{"annotations/0/completed_by": {"email": "x" * 1_020_000}}),
    _task(6, **{"annotations/0/completed_by": {"email": "x" * 400_000}}),
    _task(7),
]
SENT = {"7:1", "7:3", "7:7"}
REFUSED = {
    "labelstudio.region_unlabelled": 1,  # task 2
    "labelstudio.annotations_invalid": 1,  # task 4
    "payload.too_large": 2,  # task 5: the client refuses it; task 6: the broker does
}


def _no_traceback(result: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in result.stderr + result.stdout, result.stderr


def _fits_80_columns(text: str) -> None:
    assert text.strip()
    assert max(len(line) for line in text.splitlines()) <= 80, text
    assert "…" not in text, text  # nothing cut


def test_bad_tasks_are_quarantined_once_and_the_good_ones_sent(
    settings: Settings, tmp_path: Path
) -> None:
    export = tmp_path / "export.json"
    export.write_bytes(b"\xef\xbb\xbf" + json.dumps(EXPORT).encode())  # with a UTF-8 BOM
    not_an_export = tmp_path / "notes.json"
    not_an_export.write_text('{"hello": "world"}')
    raw = Collector(settings, topic_name(Topic.RAW, settings))

    first = labelflow(settings, "ingest", str(export), str(not_an_export))
    _no_traceback(first)
    assert first.returncode == 1, first.stdout + first.stderr
    assert "2 file(s), 3 revision(s) sent, 5 refused" in first.stdout, first.stdout
    for code in [*REFUSED, "format.unknown"]:
        assert code in first.stdout + first.stderr
    raw.wait_count(len(SENT), 30)
    sent = {decode(m.value()).task_id for m in raw.records}  # type: ignore[attr-defined]
    assert sent == SENT

    held = read_quarantine(settings)
    assert all(h.held is not None and h.held.stage == "ingest" for h in held)
    codes = sorted(c for h in held for c in h.codes)
    assert codes == sorted(c for c, n in REFUSED.items() for _ in range(n))
    by_task = {h.held.task_id: h for h in held if h.held}
    assert by_task["7:2"].held.raw_excerpt  # type: ignore[union-attr]
    assert "task 2 (#1)" in by_task["7:2"].held.reasons[0].message  # type: ignore[union-attr]
    assert {h.held.source_topic for h in held if h.held} == {f"file:{export}"}

    again = labelflow(settings, "ingest", str(export))
    _no_traceback(again)
    assert again.returncode == 1
    assert "quarantined 0 (4 already were)" in again.stdout, again.stdout
    assert len(read_quarantine(settings)) == len(held)

    listing = labelflow(settings, "quarantine", "list")
    assert listing.returncode == 0, listing.stderr
    _fits_80_columns(listing.stdout)
    for item in held:
        assert item.id in listing.stdout
    for code in REFUSED:
        assert code in listing.stdout
    as_json = json.loads(labelflow(settings, "quarantine", "list", "--json").stdout)
    assert sorted(c for row in as_json for c in row["codes"]) == codes
    assert all(row["stage"] == "ingest" and not row["can_rerun"] for row in as_json)

    shown = labelflow(settings, "quarantine", "show", by_task["7:4"].id)
    assert shown.returncode == 0, shown.stderr
    assert "labelstudio.annotations_invalid" in shown.stdout
    assert json.loads(
        labelflow(settings, "quarantine", "show", by_task["7:4"].id, "--json").stdout
    )["raw_excerpt"]
    missing = labelflow(settings, "quarantine", "show", "9:999")
    assert missing.returncode == 1
    _no_traceback(missing)

    nothing = labelflow(settings, "quarantine", "rerun", "--stage", "ingest")
    assert nothing.returncode == 0, nothing.stderr
    assert "0 record(s) re-ran" in nothing.stdout


def test_a_held_revision_is_rerun_exactly_once(settings: Settings) -> None:
    event = AnnotationEvent(
        source="synthetic", task_id="rerun-1", revision=3, status=Status.SUBMITTED
    )
    held = Quarantined(
        stage="validate",
        reasons=[Reason(code="class.unknown", message="class 'shed' is not one of building")],
        task_id=event.task_id,
        revision=event.revision,
        event=event,
        source_topic=topic_name(Topic.RAW, settings),
        source_partition=0,
        source_offset=12,
    )
    writer = producer(settings)
    writer.produce(topic_name(Topic.QUARANTINE, settings), key=b"rerun-1", value=encode(held))
    writer.flush(30)
    raw = Collector(settings, topic_name(Topic.RAW, settings))
    [item] = read_quarantine(settings)

    first = labelflow(settings, "quarantine", "rerun", "--code", "class.unknown", "--json")
    assert first.returncode == 0, first.stderr
    assert [r["id"] for r in json.loads(first.stdout)["rerun"]] == [item.id]
    again = labelflow(settings, "quarantine", "rerun", "--id", item.id)
    assert "0 record(s) re-ran" in again.stdout, again.stdout

    raw.wait_count(1, 30)
    assert [decode(m.value()) for m in raw.drain()] == [event]
    assert dict(raw.records[0].headers() or [])["labelflow.rerun.from"] == item.id.encode()
    [after] = read_quarantine(settings)
    assert after.rerun and not after.can_rerun
    listing = labelflow(settings, "quarantine", "list", "--code", "class.unknown")
    _fits_80_columns(listing.stdout)
    assert "yes" in listing.stdout


def test_dead_letter_list_fits_80_columns(settings: Settings) -> None:
    from datetime import UTC, datetime

    failure = retry.Failure(
        stage="materialize",
        error_type="transient",
        code="imagery.unreachable",
        message="http://127.0.0.1:9/scene.tif: CURL error: Could not connect to server",
        attempts=4,
        original_topic=topic_name(Topic.VALID, settings),
        original_partition=3,
        original_offset=123456,
        first_failure=datetime(2025, 3, 1, 10, 0, tzinfo=UTC),
        last_failure=datetime(2025, 3, 1, 10, 5, tzinfo=UTC),
    )
    writer = producer(settings)
    writer.produce(
        topic_name(Topic.DEAD_LETTER, settings),
        key=b"a-task-with-a-rather-long-identifier-0001",
        value=b"{}",
        headers=failure.headers(),
    )
    writer.flush(30)
    listing = labelflow(settings, "dlq", "list")
    assert listing.returncode == 0, listing.stderr
    _fits_80_columns(listing.stdout)
    assert "imagery.unreachable" in listing.stdout  # ids and codes stay whole
    [row] = json.loads(labelflow(settings, "dlq", "list", "--json").stdout)
    assert row["failure"]["code"] == "imagery.unreachable"
    assert row["failure"]["attempts"] == 4
    assert row["failure"]["original_offset"] == 123456
