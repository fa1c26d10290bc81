"""Where a failed record goes next, and the headers that travel with it."""

from __future__ import annotations

from labelflow.config import Settings
from labelflow.kafka.retry import DUE_MS, Failure, RetryPolicy, as_original, due_ms
from labelflow.stage import PermanentError, Record, TransientError

SETTINGS = Settings(topic_prefix="p.", retry_delays_s=[1.0, 10.0])
RECORD = Record(topic="p.in", partition=2, offset=40, key=b"k", value=b"v", headers=(("h", b"1"),))


def test_transient_failures_climb_the_retry_topics_then_dead_letter() -> None:
    policy = RetryPolicy(SETTINGS)
    error = TransientError("imagery.timeout", "the tile server did not answer")
    first = policy.route("s", RECORD, error, previous=None)
    assert (first.topic, first.dead_letter) == ("p.labelflow.retry.1", False)
    assert due_ms(first.headers) > 0

    previous = Failure.from_headers(first.headers)
    assert previous is not None
    retried = as_original(
        Record("p.labelflow.retry.1", 0, 7, b"k", b"v", (*RECORD.headers, *first.headers)), previous
    )
    assert (retried.topic, retried.partition, retried.offset) == ("p.in", 2, 40)
    assert retried.attempt == 1
    assert retried.headers == RECORD.headers

    second = policy.route("s", retried, error, previous)
    assert second.topic == "p.labelflow.retry.2"
    last = policy.route(
        "s", as_original(retried, Failure.from_headers(second.headers)), error, previous
    )
    assert (last.topic, last.dead_letter) == ("p.labelflow.deadletter", True)
    failure = Failure.from_headers(last.headers)
    assert failure is not None
    assert failure.attempts == 3
    assert failure.first_failure == previous.first_failure
    assert DUE_MS not in dict(last.headers)


def test_permanent_failures_go_straight_to_the_dead_letter_topic() -> None:
    route = RetryPolicy(SETTINGS).route("s", RECORD, PermanentError("x.bad", "no"), None)
    assert route.dead_letter
    failure = Failure.from_headers(route.headers)
    assert failure is not None
    assert (failure.error_type, failure.code, failure.attempts) == ("permanent", "x.bad", 1)
    assert (failure.original_topic, failure.original_partition, failure.original_offset) == (
        "p.in",
        2,
        40,
    )


def test_damaged_failure_headers_read_as_no_failure() -> None:
    assert Failure.from_headers([("labelflow.stage", b"s"), ("labelflow.attempts", b"x")]) is None
