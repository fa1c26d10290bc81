"""The labelstudio stage: hints in, the tasks' current state out — each revision once —,
failures classified."""

from __future__ import annotations

from collections.abc import Iterator
from copy import deepcopy
from pathlib import Path

import pytest

from labelflow.config import Settings
from labelflow.events import encode
from labelflow.kafka.topics import Topic
from labelflow.model import AnnotationEvent, Quarantined, Status
from labelflow.sources.labelstudio import TaskChanged
from labelflow.stage import (
    ClassifiedError,
    Output,
    PermanentError,
    Processor,
    Record,
    TransientError,
)
from labelflow.stages import labelstudio
from labelstudio_support import GONE_BAD, TOKEN, FakeLabelStudio, fake_labelstudio


@pytest.fixture
def server() -> Iterator[type[FakeLabelStudio]]:
    with fake_labelstudio() as handler:
        yield handler


@pytest.fixture
def reader(server: type[FakeLabelStudio], tmp_path: Path) -> Iterator[Processor]:
    processor = _reader(tmp_path, server.base_url)
    yield processor
    processor.close()


def _reader(data_dir: Path, url: str | None, token: str | None = TOKEN) -> Processor:
    """The stage's processor, built from explicit settings as the runner builds it."""
    settings = Settings(data_dir=data_dir, labelstudio_url=url, labelstudio_token=token)
    return labelstudio.STAGE.open(settings)


def _run(processor: Processor, record: Record) -> list[Output]:
    result = processor.run_one(record)
    if isinstance(result, ClassifiedError):
        raise result
    return list(result)


_offsets = iter(range(10**6))


def _hint(
    *task_ids: int, action: str = "ANNOTATION_UPDATED", offset: int | None = None, **extra: object
) -> Record:
    hint = TaskChanged(project=7, task_ids=task_ids, action=action, **extra)  # type: ignore[arg-type]
    return Record(
        topic="sources.changes",
        partition=0,
        offset=next(_offsets) if offset is None else offset,
        key=b"7",
        value=encode(hint),
        timestamp_ms=1_800_000_000_000,
    )


def _events(processor: Processor, record: Record) -> list[AnnotationEvent]:
    outputs = _run(processor, record)
    assert all(out.topic == Topic.RAW for out in outputs)
    assert all(isinstance(out.value, AnnotationEvent) for out in outputs)
    assert [out.key for out in outputs] == [out.value.task_id for out in outputs]
    return [out.value for out in outputs]


def test_a_hint_becomes_the_task_current_state(
    server: type[FakeLabelStudio], reader: Processor
) -> None:
    [event] = _events(reader, _hint(101))
    assert event.task_id == "3f1c2b7e-5b8a-4c55-9a51-0d6f1c6a9e01"  # the task data's own id
    assert event.status == Status.SUBMITTED
    assert {f.label for f in event.features} == {"building", "tree"}
    assert server.seen == ["/api/tasks/101"]


def test_a_revision_is_emitted_once_however_often_it_is_hinted(
    server: type[FakeLabelStudio], reader: Processor
) -> None:
    assert len(_events(reader, _hint(101))) == 1
    assert _events(reader, _hint(101, action="ANNOTATION_CREATED")) == []  # a repeat
    listed = _hint(101, action="TASKS_LISTED", snapshot=server.tasks[101])
    assert _events(reader, listed) == []  # the poll saw the same state
    server.tasks[101]["updated_at"] = "2025-03-09T00:00:00Z"  # edited in Label Studio
    assert len(_events(reader, _hint(101))) == 1


def test_a_redone_hint_emits_again(reader: Processor) -> None:
    record = _hint(101, offset=5)
    first = _events(reader, record)
    # The transaction of the first try was aborted: the same record is processed again.
    assert _events(reader, record) == first


def test_a_listed_task_is_not_read_again(server: type[FakeLabelStudio], reader: Processor) -> None:
    snapshot = deepcopy(server.tasks[103])
    [event] = _events(reader, _hint(103, action="TASKS_LISTED", snapshot=snapshot))
    assert event.task_id == "7:103"
    assert server.seen == []


def test_a_hint_for_a_task_that_never_existed_changes_nothing(reader: Processor) -> None:
    assert _events(reader, _hint(999, action="TASKS_DELETED")) == []
    assert _events(reader, _hint(999)) == []


def test_a_deleted_task_labelflow_emitted_becomes_a_deletion(
    server: type[FakeLabelStudio], reader: Processor
) -> None:
    [kept] = _events(reader, _hint(103))
    del server.tasks[103]
    assert _events(reader, _hint(103)) == []  # gone, but not said to be deleted
    record = _hint(103, action="TASKS_DELETED", offset=77)
    [gone] = _events(reader, record)
    assert (gone.task_id, gone.status) == (kept.task_id, Status.DELETED)
    assert gone.revision > kept.revision
    assert _events(reader, record) == [gone]  # a redo: the same deletion
    assert _events(reader, _hint(103, action="TASKS_DELETED")) == []  # deleted already


def test_a_task_with_its_own_id_is_deleted_under_that_id(
    server: type[FakeLabelStudio], reader: Processor
) -> None:
    _events(reader, _hint(101))
    del server.tasks[101]
    [gone] = _events(reader, _hint(101, action="TASKS_DELETED"))
    assert gone.task_id == "3f1c2b7e-5b8a-4c55-9a51-0d6f1c6a9e01"


def test_a_task_never_labelled_is_not_a_deletion(
    server: type[FakeLabelStudio], reader: Processor
) -> None:
    assert _events(reader, _hint(104)) == []  # no annotation, never emitted
    assert [e.status for e in _events(reader, _hint(103))] == [Status.SUBMITTED]
    server.tasks[103]["annotations"] = []
    server.tasks[103]["updated_at"] = "2025-03-09T00:00:00Z"
    assert [e.status for e in _events(reader, _hint(103))] == [Status.DELETED]


def test_deleted_annotations_re_read_only_their_tasks(
    server: type[FakeLabelStudio], reader: Processor
) -> None:
    _events(reader, _hint(101))
    _events(reader, _hint(103))
    server.seen.clear()
    server.tasks[103]["annotations"] = server.tasks[103]["annotations"][1:]
    server.tasks[103]["updated_at"] = "2025-03-09T00:00:00Z"
    annotation = server.tasks[103]["annotations"][0]["id"] - 1  # one that is gone now
    hint = _hint(action="ANNOTATIONS_DELETED", annotation_ids=(annotation, 424242))
    events = _events(reader, hint)
    assert server.seen == ["/api/tasks/103"]
    assert [e.task_id for e in events] == ["7:103"]


def test_a_task_that_cannot_be_converted_is_quarantined_once(
    server: type[FakeLabelStudio], reader: Processor
) -> None:
    region = server.tasks[103]["annotations"][0]["result"][0]
    region["value"]["polygonlabels"] = []
    outputs = _run(reader, _hint(103))
    [held] = [o.value for o in outputs if o.topic == Topic.QUARANTINE]
    assert isinstance(held, Quarantined)
    assert (held.task_id, held.stage) == ("7:103", "labelstudio")
    assert [r.code for r in held.reasons] == ["labelstudio.region_unlabelled"]
    assert _run(reader, _hint(103)) == []  # the same revision again: refused once is enough


def test_label_studio_outage_is_transient(server: type[FakeLabelStudio], reader: Processor) -> None:
    server.outages[101] = 1
    with pytest.raises(TransientError) as err:
        _run(reader, _hint(101))
    assert err.value.code == "labelstudio.unavailable"


@pytest.mark.parametrize(
    ("token", "task_id", "code"),
    [(TOKEN, GONE_BAD, "labelstudio.http_error"), ("wrong", 101, "labelstudio.unauthorized")],
)
def test_refusals_are_permanent(
    server: type[FakeLabelStudio], tmp_path: Path, token: str, task_id: int, code: str
) -> None:
    processor = _reader(tmp_path, server.base_url, token)
    with pytest.raises(PermanentError) as err:
        _run(processor, _hint(task_id))
    assert err.value.code == code


def test_unconfigured_source_is_permanent_with_a_clear_code(tmp_path: Path) -> None:
    with pytest.raises(PermanentError) as err:
        _run(_reader(tmp_path, url=None), _hint(101))
    assert err.value.code == "labelstudio.not_configured"
    assert "LABELFLOW_LABELSTUDIO_URL" in err.value.message


def test_a_record_that_is_not_a_hint_is_permanent(reader: Processor) -> None:
    event = AnnotationEvent(source="x", task_id="t", revision=1, status=Status.DELETED)
    record = Record(topic="sources.changes", partition=0, offset=0, key=b"t", value=encode(event))
    with pytest.raises(PermanentError) as err:
        _run(reader, record)
    assert err.value.code == "labelstudio.unexpected_event"
