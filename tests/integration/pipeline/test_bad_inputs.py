"""Every case of the bad-input corpus, mixed into good traffic, is held back by the stage the
corpus names with exactly its own reason code — quarantined by validate, dead-lettered by
materialize — and every good revision around them reaches the catalog."""

from __future__ import annotations

import random
import shutil
from pathlib import Path
from typing import Any

import pytest

from bad_inputs import CORPUS, MATERIALIZE, SPEC, VALIDATE, build
from labelflow.kafka.topics import Topic
from labelflow.sources.publish import RawPublisher
from labelflow.sources.synthetic import ExpectedTask, SyntheticConfig, generate
from pipeline_support import (
    DEAD_LETTER,
    QUARANTINE,
    StartPipeline,
    catalog_problems,
    failure,
    set_topic_config,
)

pytestmark = pytest.mark.integration

GOOD = SyntheticConfig(
    seed=31,
    tasks=60,
    scene_size=64,
    bad_fraction=0.0,
    duplicate_fraction=0.0,
    out_of_order_fraction=0.0,
)
"""Good traffic without duplicates or reordering, so nothing good is ever quarantined."""

MAX_RECORD_BYTES = 4 * 1024 * 1024
"""The oversized case is bigger than Kafka's default record limit; a deployment that lets the
raw topic take larger records relies on validate to refuse them, which is what is tested."""

TIMEOUT_S = 90.0


def _task_id(case: dict[str, Any]) -> str:
    return f"bad-{case['name']}"


def _payload(case: dict[str, Any], imagery_dir: Path) -> bytes:
    """The case's bytes, under a task id of its own (unless the case is about the task id)
    and with image files in ``imagery_dir``, so each held-back record names its case."""
    task_id = _task_id(case)
    if "raw" in case:
        return case["raw"].replace('"scene-0001"', f'"{task_id}"').encode()
    if "raw_hex" in case:
        return build(case)
    patch = {"task_id": task_id, **case.get("patch", {})}
    image = patch.get("image")
    if image and image.get("provider") == "geotiff" and image["uri"].startswith("tests/"):
        patch["image"] = {**image, "uri": str(imagery_dir / Path(image["uri"]).name)}
    return build({**case, "patch": patch})


def _imagery(tmp_path: Path) -> Path:
    """The corpus's image files as the cases describe them: a corrupt file, one without a
    CRS and one that is no image are there, the missing one is not."""
    imagery_dir = tmp_path / "imagery"
    imagery_dir.mkdir()
    for name in ("corrupt.tif", "no_crs.tif", "not_an_image.tif"):
        shutil.copy(CORPUS.parent / name, imagery_dir / name)
    return imagery_dir


def test_each_bad_input_is_held_back_with_its_own_code(
    start_pipeline: StartPipeline, tmp_path: Path
) -> None:
    assert len(VALIDATE) + len(MATERIALIZE) >= 30
    pipeline = start_pipeline()
    set_topic_config(
        pipeline.settings, pipeline.topic(Topic.RAW), "max.message.bytes", str(MAX_RECORD_BYTES)
    )
    publisher = RawPublisher(
        pipeline.settings.model_copy(
            update={"kafka_client_extra": {"message.max.bytes": str(MAX_RECORD_BYTES + 4096)}}
        )
    )
    quarantine = pipeline.collector(QUARANTINE)
    dead_letters = pipeline.collector(DEAD_LETTER)
    imagery_dir = _imagery(tmp_path)

    # The stale case needs a newer revision of its task in the catalog first.
    stale = [c for c in VALIDATE if "last_revision" in c]
    good = generate(GOOD)
    expected = dict(good.expected)
    for case in stale:
        task_id = _task_id(case)
        newer = build({"patch": {"task_id": task_id, "revision": case["last_revision"]}})
        publisher.publish_raw(task_id, newer)
        expected[task_id] = ExpectedTask(
            task_id=task_id, revision=case["last_revision"], sample=True
        )
    publisher.flush()
    pipeline.eventually(
        lambda: [
            c["name"]
            for c in stale
            if (s := pipeline.catalog.state(_task_id(c))) is None
            or s.revision != c["last_revision"]
        ],
        TIMEOUT_S,
        "the revisions that make the stale cases stale",
    )

    traffic = [(d.task_id, d.value) for d in good.deliveries]
    bad = [(_task_id(c), _payload(c, imagery_dir)) for c in SPEC["bad"]]
    rng = random.Random(5)
    for item in bad:
        traffic.insert(rng.randint(0, len(traffic)), item)
    for key, value in traffic:
        publisher.publish_raw(key, value)
    publisher.flush()

    pipeline.eventually(
        lambda: catalog_problems(pipeline.catalog, expected),
        TIMEOUT_S,
        "every good revision in the catalog",
    )
    pipeline.wait_count(quarantine, len(VALIDATE), TIMEOUT_S)
    pipeline.wait_count(dead_letters, len(MATERIALIZE), TIMEOUT_S)

    quarantined = {}
    for key, held in pipeline.quarantined(quarantine):
        assert held.stage == "validate", held
        quarantined[key.decode() if key else None] = [r.code for r in held.reasons]
    assert quarantined == {_task_id(c): [c["code"]] for c in VALIDATE}

    dead = {}
    for message in dead_letters.records:
        why = failure(message)
        assert (why.stage, why.original_topic) == ("materialize", pipeline.topic(Topic.VALID))
        dead[message.key().decode()] = (why.code, why.error_type, why.attempts)
    # A transient fault is retried once per configured delay, then dead-lettered with its
    # own code; a permanent one at once.
    retries = len(pipeline.settings.retry_delays_s)
    assert dead == {
        _task_id(c): (
            c["code"],
            "transient" if c.get("transient") else "permanent",
            retries + 1 if c.get("transient") else 1,
        )
        for c in MATERIALIZE
    }
