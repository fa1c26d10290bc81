"""What a source says is true now, as one Arrow table, and the events that repair drift.

A :class:`SourceListing` lists every task it has — ``task_id`` (the catalog's sample id),
``revision``, ``status`` — in one call, as columns rather than objects, so a million tasks
cost one table and no per-task work. It also says which catalog rows belong to it
(:class:`Scope`: a row of the catalog that belongs to the source and is absent from its listing
is an orphan), and builds the events that repair a drifted task: its current revision, or a
deletion for an orphan.

Two sources list themselves here: :class:`SyntheticSource` (a synthetic history's newest
revision per task, which tests edit and delete to inject drift) and
:class:`LabelStudioSource` (a project's task listing through the REST API).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import pyarrow as pa

from labelflow.catalog.store import Catalog
from labelflow.config import Settings
from labelflow.errors import LabelflowError
from labelflow.model import AnnotationEvent, utcnow
from labelflow.sources.base import SourceFormatError, revision_of
from labelflow.sources.labelstudio import deleted_event, task_to_event
from labelflow.sources.labelstudio_api import LabelStudioClient
from labelflow.sources.labelstudio_sync import list_tasks, source_of
from labelflow.sources.state import SourceState

LISTING_SCHEMA = pa.schema(
    [("task_id", pa.string()), ("revision", pa.int64()), ("status", pa.string())]
)
"""The columns of a listing; ``status`` is a :class:`~labelflow.model.Status` value, or
another word (``failed``) for a task the source cannot turn into an event."""


@dataclass(frozen=True)
class Scope:
    """Which catalog rows belong to a source: sample ids starting with ``prefix``, or the
    tasks a source recorded as emitted under ``claimed`` in ``source_tasks``."""

    prefix: str | None = None
    claimed: str | None = None


@dataclass(frozen=True)
class Drifted:
    """A task to repair: what the source and the catalog say of it."""

    task_id: str
    category: str
    source_revision: int | None
    catalog_revision: int | None


class SourceListing(Protocol):
    """A source that can list its truth and repair drift from it."""

    name: str
    """The source's name in reconcile runs: ``synthetic``, ``labelstudio:12``."""
    scope: Scope

    def listing(self) -> pa.Table:
        """Every task the source has now (:data:`LISTING_SCHEMA`)."""
        ...

    def repair_events(self, drifted: Sequence[Drifted], run_id: str) -> list[AnnotationEvent]:
        """The events that bring the catalog to the source for these tasks: each task's
        current revision, or a deletion newer than the catalog's for an orphan."""
        ...


def listing_table(rows: Iterable[tuple[str, int, str]]) -> pa.Table:
    """A listing from ``(task_id, revision, status)`` tuples."""
    ids: list[str] = []
    revisions: list[int] = []
    statuses: list[str] = []
    for task_id, revision, status in rows:
        ids.append(task_id)
        revisions.append(revision)
        statuses.append(status)
    return pa.table([ids, revisions, statuses], schema=LISTING_SCHEMA)


def deletion(source: str, task_id: str, revision: int) -> AnnotationEvent:
    """The event that deletes an orphan of ``source``: a revision newer than the catalog's."""
    return deleted_event(task_id, revision, utcnow()).model_copy(update={"source": source})


class SyntheticSource:
    """A synthetic history's truth: per task, its newest revision (``events``, editable).

    Tests inject drift at the source by replacing an event with a newer revision (an edit the
    pipeline never heard of) or removing it (a task deleted while nobody listened).
    """

    name = "synthetic"
    scope = Scope(prefix="synthetic:")

    def __init__(self, events: Mapping[str, AnnotationEvent]) -> None:
        self.events: dict[str, AnnotationEvent] = dict(events)

    @classmethod
    def from_deliveries(cls, values: Iterable[bytes]) -> SyntheticSource:
        """Each task's newest valid revision among delivered event bytes (bad ones skipped)."""
        newest: dict[str, AnnotationEvent] = {}
        for value in values:
            try:
                event = AnnotationEvent.model_validate_json(value)
            except ValueError:
                continue
            known = newest.get(event.task_id)
            if known is None or event.revision > known.revision:
                newest[event.task_id] = event
        return cls(newest)

    def listing(self) -> pa.Table:
        return listing_table((e.task_id, e.revision, str(e.status)) for e in self.events.values())

    def repair_events(self, drifted: Sequence[Drifted], run_id: str) -> list[AnnotationEvent]:
        out = []
        for item in drifted:
            current = self.events.get(item.task_id)
            if current is not None:
                out.append(current)
            elif item.catalog_revision is not None:
                out.append(deletion("synthetic", item.task_id, item.catalog_revision + 1))
        return out


class LabelStudioSource:
    """A Label Studio project: listed page by page through the REST API; a drifted task is
    read again (``GET /api/tasks/{id}``) and converted, and each repair is claimed in the
    source state like any emission, so the labelstudio stage does not emit it a second time.
    """

    def __init__(self, settings: Settings, project: int) -> None:
        if not (settings.labelstudio_url and settings.labelstudio_token):
            raise LabelflowError(
                "No Label Studio to reconcile with.",
                hint="set LABELFLOW_LABELSTUDIO_URL and LABELFLOW_LABELSTUDIO_TOKEN",
            )
        self.project = project
        self.options = settings.labelstudio_mapping
        self.client = LabelStudioClient(
            settings.labelstudio_url,
            settings.labelstudio_token.get_secret_value(),
            page_size=settings.labelstudio_page_size,
        )
        self.name = source_of("labelstudio", project)
        self.scope = Scope(claimed=self.name)
        self._catalog = Catalog(settings.resolved_catalog_url)
        self.state = SourceState(self._catalog)
        self._external: dict[str, int] = {}
        self._known: dict[str, int] | None = None

    def listing(self) -> pa.Table:
        rows = []
        for task in list_tasks(self.client, self.project, self.options):
            self._external[task.task_id] = task.external_id
            rows.append((task.task_id, task.revision, task.status))
        return listing_table(rows)

    def repair_events(self, drifted: Sequence[Drifted], run_id: str) -> list[AnnotationEvent]:
        out = []
        for item in drifted:
            external_id = self._external.get(item.task_id)
            task = self.client.get_task(external_id) if external_id is not None else None
            if task is not None:
                try:
                    event = task_to_event(task, self.options, self.project)
                except SourceFormatError:
                    continue  # quarantined by the labelstudio stage; a fix at the source lists anew
            elif item.catalog_revision is not None:
                revision = max(item.catalog_revision + 1, revision_of(utcnow()))
                event = deletion("labelstudio", item.task_id, revision)
                external_id = self._claimed_id(item.task_id)
                if external_id is None:
                    continue
            else:
                continue
            assert external_id is not None
            # Claimed like any emission: the labelstudio stage then does not emit it again.
            self.state.claim(
                self.name,
                external_id,
                task_id=event.task_id,
                revision=event.revision,
                status=event.status,
                emitted_by=f"reconcile:{run_id}",
            )
            out.append(event)
        return out

    def _claimed_id(self, task_id: str) -> int | None:
        """The external id of a task gone from the project, from what was emitted of it."""
        if self._known is None:
            self._known = {k.task_id: k.external_id for k in self.state.known_tasks(self.name)}
        return self._known.get(task_id)

    def close(self) -> None:
        self.client.close()
        self._catalog.close()
