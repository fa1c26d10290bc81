"""labelstudio: sources.changes → annotations.raw.

A webhook only says "task X changed" (:class:`~labelflow.sources.labelstudio.TaskChanged`), and
Label Studio sends it once, unordered, and not at all for some deletions. So this stage never
trusts what a hint says about the task: it reads the task's *current* state from Label
Studio's REST API and emits that as the canonical event. Hints arriving twice, late or out of
order therefore all yield the newest state, and a redone batch yields the same events again
(validate drops a revision the catalog already holds).

A hint that names no task (ANNOTATIONS_DELETED carries annotation ids only) sweeps its
project: every task's current state is emitted. Deleted tasks do not show up in a sweep;
they are caught by a hint naming them (TASKS_DELETED: the task answers 404 and becomes a
deletion) or by reconciling the catalog against the project.

Failures are classified by :class:`~labelflow.sources.labelstudio.LabelStudioClient`:
timeouts, refused connections, 429 and 5xx are transient and retried through the retry
topics; other 4xx are permanent. A refused token and a missing configuration are permanent
too (``labelstudio.unauthorized``, ``labelstudio.not_configured``): retrying cannot fix them,
and the dead-lettered hints can be replayed once the settings are fixed.
"""

from __future__ import annotations

from labelflow.config import Settings
from labelflow.errors import LabelflowError
from labelflow.kafka.topics import Topic
from labelflow.sources.labelstudio import LabelStudioClient, TaskChanged
from labelflow.stage import Output, PermanentError, Processor, Record, Stage


class TaskReader(Processor):
    """Reads the current state of each hinted task from the Label Studio in the settings."""

    def __init__(self, settings: Settings) -> None:
        url, token = settings.labelstudio_url, settings.labelstudio_token
        # Not configured is a property of each hint, not a reason to crash-loop the worker:
        # the hints are dead-lettered and can be replayed once the settings are fixed.
        self.client = LabelStudioClient(url, token.get_secret_value()) if url and token else None

    def process_one(self, record: Record) -> list[Output]:
        hint = record.event()
        if not isinstance(hint, TaskChanged):
            raise PermanentError(
                "labelstudio.unexpected_event", f"expected a task-changed hint, got {type(hint)}"
            )
        if self.client is None:
            raise PermanentError(
                "labelstudio.not_configured",
                "no Label Studio to read from: set LABELFLOW_LABELSTUDIO_URL and "
                "LABELFLOW_LABELSTUDIO_TOKEN",
            )
        ls = self.client
        try:
            if hint.needs_sweep:
                events = list(ls.project_events(hint.project))
            else:
                events = [ls.current_event(hint.project, task_id) for task_id in hint.task_ids]
        except LabelflowError as exc:  # the client's "token refused": a configuration problem
            raise PermanentError("labelstudio.unauthorized", exc.message) from exc
        return [Output(Topic.RAW, event, key=event.task_id) for event in events]


STAGE = Stage(
    name="labelstudio",
    inputs=(Topic.SOURCE_CHANGES,),
    outputs=(Topic.RAW,),
    setup=TaskReader,
)
