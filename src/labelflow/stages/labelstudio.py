"""labelstudio: sources.changes → annotations.raw | annotations.quarantine.

A hint only says "task X changed" (:class:`~labelflow.sources.labelstudio.TaskChanged`), from a
webhook — sent once, unordered, and not at all for some deletions — or from the backfill and
poll of the project. This stage never trusts what a webhook says about a task: it emits the
task's *current* state, read from Label Studio's REST API (or listed by the poll moments ago),
through :class:`~labelflow.sources.labelstudio_sync.TaskReader`:

- a revision already emitted is not emitted again (repeated webhooks, a poll seeing what a
  webhook announced), so a revision that fails downstream is dead-lettered once;
- a task that answers 404 is deleted only for a TASKS_DELETED hint about a task emitted
  before; a hint naming annotations re-reads the tasks that held them, never the project;
- a task that cannot be converted is quarantined with its reason (once per revision), while
  the hint's other tasks go on.

Failures of the API are classified: timeouts, refused connections, 429 and 5xx are transient
and retried through the retry topics; a refused token and other 4xx are permanent, as is a
stage started without a Label Studio to read (``labelstudio.not_configured``): the hints are
dead-lettered and can be replayed once the settings are fixed.
"""

from __future__ import annotations

from labelflow.config import Settings
from labelflow.kafka.topics import Topic
from labelflow.sources.labelstudio import TaskChanged
from labelflow.sources.labelstudio_api import LabelStudioClient
from labelflow.sources.labelstudio_sync import TaskReader, refusal_record
from labelflow.sources.state import SourceState
from labelflow.stage import Output, PermanentError, Processor, Record, Stage
from labelflow.stages.context import StageContext


class LabelStudioReader(Processor):
    """Reads hinted tasks from the Label Studio in the settings; remembers what it emitted in
    the catalog database."""

    def __init__(self, settings: Settings) -> None:
        url, token = settings.labelstudio_url, settings.labelstudio_token
        self.ctx = StageContext.open(settings, catalog=True)
        assert self.ctx.catalog is not None
        # Not configured is a property of each hint, not a reason to crash-loop the worker:
        # the hints are dead-lettered and can be replayed once the settings are fixed.
        self.client = (
            LabelStudioClient(
                url, token.get_secret_value(), page_size=settings.labelstudio_page_size
            )
            if url and token
            else None
        )
        self.reader = (
            TaskReader(self.client, SourceState(self.ctx.catalog), settings.labelstudio_mapping)
            if self.client
            else None
        )

    def process_one(self, record: Record) -> list[Output]:
        hint = record.event()
        if not isinstance(hint, TaskChanged):
            raise PermanentError(
                "labelstudio.unexpected_event", f"expected a task-changed hint, got {type(hint)}"
            )
        if self.reader is None:
            raise PermanentError(
                "labelstudio.not_configured",
                "no Label Studio to read from: set LABELFLOW_LABELSTUDIO_URL and "
                "LABELFLOW_LABELSTUDIO_TOKEN",
            )
        events, refusals = self.reader.read(
            hint,
            emitted_by=f"{record.topic}:{record.partition}:{record.offset}",
            noticed_ms=record.timestamp_ms,
        )
        outputs = [Output(Topic.RAW, event, key=event.task_id) for event in events]
        where = {"topic": record.topic, "partition": record.partition, "offset": record.offset}
        outputs += [
            Output(Topic.QUARANTINE, refusal_record(refusal, **where), key=refusal.task_id)
            for refusal in refusals
        ]
        return outputs

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
        self.ctx.close()


STAGE = Stage(
    name="labelstudio",
    inputs=(Topic.SOURCE_CHANGES,),
    outputs=(Topic.RAW, Topic.QUARANTINE),
    setup=LabelStudioReader,
)
