"""Transient failures retry without blocking their partition; permanent ones are dead-lettered
with their reason, and replaying them after a fix delivers each exactly once."""

from __future__ import annotations

import json
import subprocess
from collections import Counter

from labelflow.kafka import retry
from labelflow.kafka.dlq import read_dead_letters
from runtime_support import LABELFLOW, Pipeline, data, item
from support import wait_for


def test_transient_failures_retry_without_delaying_other_keys(pipeline: Pipeline) -> None:
    pipeline.create("in", "mid", partitions=1)  # one partition: every key shares it
    flaky = [(f"flaky{i}", item(f"flaky{i}", 0)) for i in range(5)]
    good = [(f"good{i}", item(f"good{i}", 0)) for i in range(300)]
    pipeline.produce("in", [*flaky, ("doomed0", item("doomed0", 0)), *good])
    worker = pipeline.start("first", "w0")
    mid = pipeline.collector("mid")

    mid.wait_count(len(flaky) + len(good))
    wait_for(lambda: len(read_dead_letters(pipeline.settings)) == 1, 30, "the doomed record")
    assert worker.terminate() == 0

    outputs = [data(m) for m in mid.drain()]
    assert len(outputs) == len(flaky) + len(good)
    order = [d["key"] for d in outputs]
    last_good = max(i for i, k in enumerate(order) if k.startswith("good"))
    first_flaky = min(i for i, k in enumerate(order) if k.startswith("flaky"))
    # Written before every good record, the flaky ones come out after all of them.
    assert last_good < first_flaky, order
    assert {d["attempt"] for d in outputs if d["key"].startswith("flaky")} == {2}
    assert {d["attempt"] for d in outputs if d["key"].startswith("good")} == {0}

    (doomed,) = read_dead_letters(pipeline.settings)
    assert doomed.key == b"doomed0"
    assert doomed.failure is not None
    assert doomed.failure.error_type == "transient"
    assert doomed.failure.code == "test.doomed"
    assert doomed.failure.attempts == 3  # the first try and one per configured delay
    assert doomed.failure.first_failure < doomed.failure.last_failure


def test_dead_letters_carry_their_reason_and_replay_exactly_once(pipeline: Pipeline) -> None:
    pipeline.create("in", "mid", partitions=2)
    broken = pipeline.workdir / "broken"
    broken.touch()
    good = [(f"good{i}", item(f"good{i}", 0)) for i in range(20)]
    bad = [(f"bad{i}", item(f"bad{i}", 0)) for i in range(3)]
    unknown = json.dumps({"schema": "test.nothing", "version": 9, "data": {}}).encode()
    junk = [("junk0", b"\xff\x00 not an event"), ("junk1", unknown)]
    pipeline.produce("in", [*good, *bad, *junk])
    inputs = {m.key(): m for m in pipeline.collector("in").drain()}
    worker = pipeline.start("first", "w0")
    mid = pipeline.collector("mid")

    mid.wait_count(len(good))
    wait_for(lambda: len(read_dead_letters(pipeline.settings)) == 5, 30, "5 dead letters")
    letters = {d.key: d for d in read_dead_letters(pipeline.settings)}
    codes = {key: d.failure.code for key, d in letters.items() if d.failure}
    assert codes == {
        b"bad0": "test.broken",
        b"bad1": "test.broken",
        b"bad2": "test.broken",
        b"junk0": "event.malformed",
        b"junk1": "event.unknown_schema",
    }
    for key, letter in letters.items():
        headers = dict(letter.headers)
        original = inputs[key]
        assert headers[retry.STAGE] == b"first"
        assert headers[retry.ERROR_TYPE] == b"permanent"
        assert headers[retry.ERROR_MESSAGE]
        assert headers[retry.ATTEMPTS] == b"1"
        assert headers[retry.ORIGINAL_TOPIC] == pipeline.topic("in").encode()
        assert int(headers[retry.ORIGINAL_PARTITION]) == original.partition()
        assert int(headers[retry.ORIGINAL_OFFSET]) == original.offset()
        assert headers[retry.FIRST_FAILURE] and headers[retry.LAST_FAILURE]
        assert letter.value == original.value()

    broken.unlink()  # the fix
    replay = [LABELFLOW, "dlq", "replay", "--stage", "first", "--code", "test.broken"]
    first = subprocess.run(replay, env=pipeline.env, capture_output=True, text=True, check=True)
    assert "3 letter(s) replayed" in first.stdout
    mid.wait_count(len(good) + len(bad))
    again = subprocess.run(replay, env=pipeline.env, capture_output=True, text=True, check=True)
    assert "0 letter(s) replayed" in again.stdout

    listing = subprocess.run(
        [LABELFLOW, "dlq", "list", "--code", "test.broken"],
        env=pipeline.env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert listing.stdout.count("yes") == 3
    assert worker.terminate() == 0
    keys = Counter(data(m)["key"] for m in mid.drain())
    assert keys == Counter(k for k, _ in [*good, *bad])
