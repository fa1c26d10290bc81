"""Source state on SQLite and PostgreSQL: claims emit a revision once (a redo again), class
indices are never renumbered."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from labelflow.catalog.store import Catalog
from labelflow.model import Status
from labelflow.sources.state import SourceState

pytestmark = pytest.mark.integration

SOURCE = "labelstudio:7"


@pytest.fixture
def state(catalog_url: str) -> Iterator[SourceState]:
    with Catalog(catalog_url) as catalog:
        catalog.migrate()
        yield SourceState(catalog)


def _claim(state: SourceState, revision: int, by: str, **extra: object) -> bool:
    return state.claim(
        SOURCE,
        42,
        task_id="7:42",
        revision=revision,
        status=extra.pop("status", Status.SUBMITTED),  # type: ignore[arg-type]
        emitted_by=by,
        **extra,  # type: ignore[arg-type]
    )


def test_a_revision_is_claimed_once_except_by_a_redo_of_the_same_record(
    state: SourceState,
) -> None:
    assert _claim(state, 10, "changes:0:1", annotation_ids=[5, 6])
    assert not _claim(state, 10, "changes:0:2")  # another hint of the same state
    assert _claim(state, 10, "changes:0:1")  # the same hint, redone after an abort
    assert not _claim(state, 9, "changes:0:3")  # older
    assert _claim(state, 11, "changes:0:4", status=Status.DELETED)
    known = state.known(SOURCE, 42)
    assert known is not None
    assert (known.task_id, known.revision, known.status) == ("7:42", 11, "deleted")
    assert state.owners(SOURCE, [6, 99]) == [42]
    assert state.known("labelstudio:8", 42) is None


def test_racing_claims_of_one_revision_let_exactly_one_through(state: SourceState) -> None:
    with ThreadPoolExecutor(max_workers=4) as pool:
        won = list(pool.map(lambda n: _claim(state, 10, f"changes:{n}:0"), range(8)))
    assert won.count(True) == 1


def test_cursors_round_trip(state: SourceState) -> None:
    assert state.cursor(SOURCE) == {}
    state.save_cursor(SOURCE, {"phase": "backfill", "after_id": 3})
    state.save_cursor(SOURCE, {"phase": "follow", "since": "2026-01-01T00:00:00.000000Z"})
    assert state.cursor(SOURCE) == {"phase": "follow", "since": "2026-01-01T00:00:00.000000Z"}


def test_class_indices_are_appended_never_renumbered(state: SourceState) -> None:
    first = state.assign_classes(["building", "road"], SOURCE)
    assert (first.classes, first.added, first.removed) == (
        {"building": 1, "road": 2},
        ["building", "road"],
        [],
    )
    second = state.assign_classes(["water", "building"], SOURCE)
    assert second.classes == {"building": 1, "road": 2, "water": 3}
    assert (second.added, second.removed) == (["water"], ["road"])
    third = state.assign_classes(["road", "water", "building"], SOURCE)
    assert third.classes == {"building": 1, "road": 2, "water": 3}
    assert (third.added, third.removed) == ([], [])
