"""The labelstudio stage: hints in, the tasks' current state out, failures classified."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from labelflow.config import Settings
from labelflow.events import encode
from labelflow.kafka.topics import Topic
from labelflow.model import AnnotationEvent, Status
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


def _reader(url: str | None, token: str | None = TOKEN) -> Processor:
    """The stage's processor, built from explicit settings as the runner builds it."""
    return labelstudio.STAGE.open(Settings(labelstudio_url=url, labelstudio_token=token))


def _process(record: Record, url: str | None, token: str | None = TOKEN) -> list[Output]:
    result = _reader(url, token).run_one(record)
    if isinstance(result, ClassifiedError):
        raise result
    return list(result)


def _hint(*task_ids: int, action: str = "ANNOTATION_UPDATED") -> Record:
    hint = TaskChanged(project=7, task_ids=task_ids, action=action)
    return Record(topic="sources.changes", partition=0, offset=0, key=b"7", value=encode(hint))


def _events(record: Record, url: str) -> list[AnnotationEvent]:
    outputs = _process(record, url)
    assert all(out.topic == Topic.RAW for out in outputs)
    assert all(isinstance(out.value, AnnotationEvent) for out in outputs)
    assert [out.key for out in outputs] == [out.value.task_id for out in outputs]
    return [out.value for out in outputs]


def test_a_hint_becomes_the_task_current_state(server: type[FakeLabelStudio]) -> None:
    [event] = _events(_hint(101), server.base_url)
    assert event.task_id == "3f1c2b7e-5b8a-4c55-9a51-0d6f1c6a9e01"  # the task data's own id
    assert event.status == Status.SUBMITTED
    assert {f.label for f in event.features} == {"building", "tree"}
    assert server.seen == ["/api/tasks/101"]


def test_a_vanished_task_becomes_a_deletion(server: type[FakeLabelStudio]) -> None:
    [event] = _events(_hint(999, action="TASKS_DELETED"), server.base_url)
    assert (event.task_id, event.status) == ("7:999", Status.DELETED)


def test_a_hint_naming_no_task_sweeps_the_project(server: type[FakeLabelStudio]) -> None:
    events = _events(_hint(action="ANNOTATIONS_DELETED"), server.base_url)
    assert len(events) == len([t for t in server.tasks.values() if t["project"] == 7])
    assert events[-1].status == Status.DELETED  # task 104's annotations are all gone


def test_label_studio_outage_is_transient(server: type[FakeLabelStudio]) -> None:
    server.outages[101] = 1
    with pytest.raises(TransientError) as err:
        _process(_hint(101), server.base_url)
    assert err.value.code == "labelstudio.unavailable"


@pytest.mark.parametrize(
    ("token", "task_id", "code"),
    [(TOKEN, GONE_BAD, "labelstudio.http_error"), ("wrong", 101, "labelstudio.unauthorized")],
)
def test_refusals_are_permanent(
    server: type[FakeLabelStudio], token: str, task_id: int, code: str
) -> None:
    with pytest.raises(PermanentError) as err:
        _process(_hint(task_id), server.base_url, token)
    assert err.value.code == code


def test_unconfigured_source_is_permanent_with_a_clear_code() -> None:
    with pytest.raises(PermanentError) as err:
        _process(_hint(101), url=None)
    assert err.value.code == "labelstudio.not_configured"
    assert "LABELFLOW_LABELSTUDIO_URL" in err.value.message


def test_a_record_that_is_not_a_hint_is_permanent(server: type[FakeLabelStudio]) -> None:
    event = AnnotationEvent(source="x", task_id="t", revision=1, status=Status.DELETED)
    record = Record(topic="sources.changes", partition=0, offset=0, key=b"t", value=encode(event))
    with pytest.raises(PermanentError) as err:
        _process(record, server.base_url)
    assert err.value.code == "labelstudio.unexpected_event"
