"""The demo's quarantine tally: every record counted by its first reason, markers skipped."""

from __future__ import annotations

from labelflow.demo import _quarantine_reason
from labelflow.events import encode
from labelflow.model import Quarantined, Reason


def test_reasons_are_counted_and_rerun_markers_are_not() -> None:
    held = Quarantined(
        stage="validate",
        reasons=[Reason(code="class.unknown", message="x")],
        source_topic="annotations.raw",
        source_partition=0,
        source_offset=7,
    )
    assert _quarantine_reason(encode(held), {}) == "class.unknown"
    assert _quarantine_reason(None, {}) is None  # a rerun marker carries no value
    assert _quarantine_reason(b"", {}) is None
    assert _quarantine_reason(b"not json", {}) == "event.malformed"
