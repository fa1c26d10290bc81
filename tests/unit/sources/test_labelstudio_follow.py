"""Backfill, then follow: a project listed once (resumably), then polled for changes."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from copy import deepcopy
from pathlib import Path

import pytest

from labelflow.catalog.store import Catalog
from labelflow.sources.labelstudio import TaskChanged
from labelflow.sources.labelstudio_api import LabelStudioClient
from labelflow.sources.labelstudio_sync import LabelStudioFollower
from labelflow.sources.publish import HintNotDelivered
from labelflow.sources.state import SourceState
from labelstudio_support import TOKEN, FakeLabelStudio, fake_labelstudio
from support import wait_for


class Hints:
    """Collects published hints; ``fail_after`` makes the n-th publish call raise."""

    def __init__(self) -> None:
        self.hints: list[TaskChanged] = []
        self.fail_after: int | None = None
        self.calls = 0

    def __call__(self, hints: Sequence[TaskChanged]) -> None:
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise HintNotDelivered("broker gone")
        self.hints.extend(hints)

    def ids(self) -> list[int]:
        return [h.task_ids[0] for h in self.hints]


@pytest.fixture
def server() -> Iterator[type[FakeLabelStudio]]:
    with fake_labelstudio() as handler:
        yield handler


@pytest.fixture
def state(tmp_path: Path) -> Iterator[SourceState]:
    with Catalog(f"sqlite:///{tmp_path / 'catalog.db'}") as catalog:
        catalog.migrate()
        yield SourceState(catalog)


@pytest.fixture
def hints() -> Hints:
    return Hints()


@pytest.fixture
def follower(
    server: type[FakeLabelStudio], state: SourceState, hints: Hints
) -> LabelStudioFollower:
    return _follower(server, state, hints)


def _follower(
    server: type[FakeLabelStudio], state: SourceState, hints: Hints
) -> LabelStudioFollower:
    client = LabelStudioClient(server.base_url, TOKEN, page_size=2)
    return LabelStudioFollower(client, state, hints, 7, interval_s=0.05)


def _touch(server: type[FakeLabelStudio], task_id: int, when: str) -> None:
    server.tasks[task_id]["updated_at"] = when


def test_first_start_lists_every_task_then_only_changes(
    server: type[FakeLabelStudio], hints: Hints, follower: LabelStudioFollower
) -> None:
    assert follower.run_once() == 4
    assert hints.ids() == [101, 102, 103, 104]
    assert all(h.action == "TASKS_LISTED" and h.snapshot for h in hints.hints)
    assert hints.hints[0].snapshot == server.tasks[101]
    assert follower.backfilled
    hints.hints.clear()
    follower.run_once()
    assert hints.ids() == []  # nothing changed: nothing hinted again
    _touch(server, 102, "2025-03-10T00:00:00.000001Z")
    follower.run_once()
    follower.run_once()
    assert hints.ids() == [102]


def test_an_interrupted_backfill_resumes_after_the_last_page_delivered(
    server: type[FakeLabelStudio], state: SourceState, hints: Hints, follower: LabelStudioFollower
) -> None:
    hints.fail_after = 1
    with pytest.raises(HintNotDelivered):
        follower.run_once()
    assert hints.ids() == [101, 102]
    hints.fail_after = None
    restarted = _follower(server, state, hints)  # a new process: the cursor is in the catalog
    restarted.run_once()
    assert hints.ids() == [101, 102, 103, 104]


def test_a_change_during_the_backfill_is_caught_by_the_first_poll(
    server: type[FakeLabelStudio], hints: Hints, follower: LabelStudioFollower
) -> None:
    hints.fail_after = 1
    with pytest.raises(HintNotDelivered):
        follower.run_once()
    _touch(server, 101, "2025-03-10T00:00:00Z")  # listed already, then edited
    hints.fail_after = None
    follower.run_once()  # finishes the backfill
    follower.run_once()  # first poll
    assert hints.ids() == [101, 102, 103, 104, 101]


def test_changes_sharing_one_instant_beyond_a_page_are_all_listed(
    server: type[FakeLabelStudio], hints: Hints, follower: LabelStudioFollower
) -> None:
    follower.run_once()
    hints.hints.clear()
    for n in range(7):  # a bulk update: seven tasks, one updated_at
        server.tasks[200 + n] = {**deepcopy(server.tasks[103]), "id": 200 + n}
        _touch(server, 200 + n, "2025-04-01T00:00:00.000000Z")
    follower.run_once()
    follower.run_once()
    assert sorted(hints.ids()) == list(range(200, 207))


def test_a_save_that_commits_late_is_caught_within_the_overlap(
    server: type[FakeLabelStudio], hints: Hints, follower: LabelStudioFollower
) -> None:
    follower.run_once()
    _touch(server, 104, "2025-04-01T00:00:10Z")
    follower.run_once()
    hints.hints.clear()
    # Saved at 00:00:05 but committed only after the poll above saw 00:00:10.
    _touch(server, 103, "2025-04-01T00:00:05Z")
    follower.run_once()
    assert hints.ids() == [103]


def test_run_keeps_polling_through_failures_until_stopped(
    server: type[FakeLabelStudio], hints: Hints, follower: LabelStudioFollower
) -> None:
    hints.fail_after = 0  # the broker is down at first
    stop = threading.Event()
    thread = threading.Thread(target=follower.run, args=(stop,))
    thread.start()
    try:
        wait_for(lambda: hints.calls >= 1, 10, "a first, failing publish")
        hints.fail_after = None  # back
        wait_for(lambda: follower.backfilled, 10, "the backfill")
        _touch(server, 101, "2025-05-01T00:00:00Z")
        wait_for(lambda: hints.ids().count(101) == 2, 10, "the edit to be polled")
    finally:
        stop.set()
        thread.join(5)
    assert not thread.is_alive()
