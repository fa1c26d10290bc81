"""Keeping the pipeline in step with a Label Studio project: read hinted tasks, backfill, poll.

Three paths bring a task to labelflow, all as :class:`~labelflow.sources.labelstudio.TaskChanged`
hints on ``sources.changes``:

- **webhooks** (low latency, but sent once and never retried);
- **backfill**: on first start for a project, every existing task is listed in id order, a page
  at a time, resumable from the last id listed (kept in ``source_cursors``);
- **polling** every few seconds: tasks whose ``updated_at`` moved since the last poll (Label
  Studio bumps it on every save, skip or deletion of an annotation), so what a lost webhook
  or a stop of labelflow missed is caught up.

Listed tasks travel with their state (``snapshot``), so the reader does not ask again.

:class:`TaskReader` (run by the ``labelstudio`` stage) turns a hint into events:

1. a hint names tasks, or annotations whose tasks it looks up (one hint re-reads the tasks it
   is about, never the whole project; annotations never seen are caught by the next poll);
2. each task's current state is its snapshot or ``GET /api/tasks/{id}``;
3. the revision is *claimed* (:meth:`~labelflow.sources.state.SourceState.claim`): a revision
   already emitted — or already refused — is not emitted again, so a revision that fails
   downstream is dead-lettered once, not on every re-read;
4. a task that answers 404 becomes a deletion only for a TASKS_DELETED hint and a task
   labelflow emitted before: a hint for a task that never existed changes nothing;
5. a task that cannot be converted (a brush drawn on another image size …) is quarantined with
   its reason, once per revision; the hint's other tasks go on.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel

from labelflow.config import Settings
from labelflow.errors import ClassifiedError, LabelflowError, PermanentError
from labelflow.model import AnnotationEvent, Quarantined, Reason, Status
from labelflow.sources.base import EPOCH, SourceFormatError, parse_time, revision_of
from labelflow.sources.labelstudio import (
    LabelStudioOptions,
    TaskChanged,
    deleted_event,
    task_key,
    task_to_event,
)
from labelflow.sources.labelstudio_api import (
    LabelStudioClient,
    id_after,
    updated_since,
    updated_until,
)
from labelflow.sources.state import FAILED, SourceState

log = logging.getLogger(__name__)

STAGE_NAME = "labelstudio"

OVERLAP_S = 30.0
"""Each poll looks this far back before the newest change it saw: a save whose transaction
committed after the last poll can carry an earlier ``updated_at`` than what that poll saw, and
would be missed forever without the overlap. Tasks already hinted at the same ``updated_at``
are not hinted again."""

MAX_SNAPSHOT_BYTES = 256 * 1024
"""A task larger than this (a big brush) travels as a bare hint and is read again by the
reader: a Kafka record has a size limit, a GET does not."""

ERROR_BACKOFF_S = (1.0, 5.0, 30.0)
"""Waits after consecutive failed polls: Label Studio restarting should not be hammered, and a
wrong token should be logged every half minute, not every few seconds."""


def source_of(hint_source: str, project: int) -> str:
    """The namespace of a project's tasks in the source state: ``labelstudio:<project>``."""
    return f"{hint_source}:{project}"


def task_revision(task: dict[str, Any]) -> int:
    """A task's revision without converting it (its ``updated_at``, which Label Studio bumps
    on every change of its annotations), for tasks that cannot be converted."""
    try:
        when = parse_time(task.get("updated_at"))
    except SourceFormatError:
        when = None
    return revision_of(when) if when else 0


def annotation_ids(task: dict[str, Any]) -> list[int]:
    return [
        a["id"]
        for a in task.get("annotations") or []
        if isinstance(a, dict) and isinstance(a.get("id"), int)
    ]


# --- hints → events ----------------------------------------------------------------------


class Refusal(BaseModel):
    """A task that could not be turned into an event, with why."""

    task_id: str
    revision: int
    reason: Reason


class TaskReader:
    """Turns hints into the events (and refusals) the pipeline has not seen yet."""

    def __init__(
        self, client: LabelStudioClient, state: SourceState, options: LabelStudioOptions
    ) -> None:
        self.client = client
        self.state = state
        self.options = options

    def read(
        self, hint: TaskChanged, *, emitted_by: str, noticed_ms: int
    ) -> tuple[list[AnnotationEvent], list[Refusal]]:
        """Events and refusals for ``hint``; ``emitted_by`` names the hint record (a redo of
        the same record may emit again), ``noticed_ms`` is when it was produced (the revision
        of a deletion, so a redo yields the same one)."""
        source = source_of(hint.source, hint.project)
        ids = hint.task_ids or tuple(self.state.owners(source, hint.annotation_ids))
        events: list[AnnotationEvent] = []
        refusals: list[Refusal] = []
        for external_id in ids:
            snapshot = (
                hint.snapshot if hint.snapshot and hint.snapshot.get("id") == external_id else None
            )
            task = snapshot or self.client.get_task(external_id)
            if task is None:
                gone = self._deletion(hint, source, external_id, emitted_by, noticed_ms)
                events.extend(gone)
                continue
            claim = {"emitted_by": emitted_by, "annotation_ids": annotation_ids(task)}
            try:
                event = task_to_event(task, self.options, hint.project)
            except SourceFormatError as exc:
                key = _safe_key(hint.project, task, self.options)
                revision = task_revision(task)
                if self.state.claim(
                    source, external_id, task_id=key, revision=revision, status=FAILED, **claim
                ):
                    reason = Reason(code=exc.code, message=f"task {external_id}: {exc.message}")
                    refusals.append(Refusal(task_id=key, revision=revision, reason=reason))
                continue
            if event.status == Status.DELETED and self.state.known(source, external_id) is None:
                continue  # never labelled, never emitted: there is no sample to remove
            if self.state.claim(
                source,
                external_id,
                task_id=event.task_id,
                revision=event.revision,
                status=event.status,
                **claim,
            ):
                events.append(event)
        return events, refusals

    def _deletion(
        self, hint: TaskChanged, source: str, external_id: int, emitted_by: str, noticed_ms: int
    ) -> list[AnnotationEvent]:
        if hint.action != "TASKS_DELETED":
            return []  # a task that does not exist and was not said to be deleted: nothing
        known = self.state.known(source, external_id)
        if known is None:
            return []  # never emitted: the catalog has nothing of it to delete
        if known.status == Status.DELETED:
            if known.emitted_by != emitted_by:
                return []  # deleted already
            revision = known.revision  # a redo of the hint that deleted it
        else:
            # Later than anything the task had, and the same on a redo of this hint.
            revision = max(known.revision + 1, noticed_ms * 1000)
        if not self.state.claim(
            source,
            external_id,
            task_id=known.task_id,
            revision=revision,
            status=Status.DELETED,
            emitted_by=emitted_by,
        ):
            return []
        when = EPOCH + timedelta(microseconds=revision)
        return [deleted_event(known.task_id, revision, when)]


def _safe_key(project: int, task: dict[str, Any], options: LabelStudioOptions) -> str:
    try:
        return task_key(project, task, options)
    except (TypeError, ValueError, KeyError):
        return f"{project}:{task.get('id')}"


def refusal_record(refusal: Refusal, *, topic: str, partition: int, offset: int) -> Quarantined:
    """The quarantine record of a task that could not be converted."""
    return Quarantined(
        stage=STAGE_NAME,
        reasons=[refusal.reason],
        task_id=refusal.task_id,
        revision=refusal.revision,
        source_topic=topic,
        source_partition=partition,
        source_offset=offset,
    )


# --- the source's own listing ------------------------------------------------------------


class ListedTask(BaseModel):
    """One task as the source has it now (for reconciliation against the catalog)."""

    external_id: int
    task_id: str
    revision: int
    status: str
    """A :class:`~labelflow.model.Status`, or ``failed`` when it cannot be converted."""


def list_tasks(
    client: LabelStudioClient, project: int, options: LabelStudioOptions
) -> Iterator[ListedTask]:
    """Every task of ``project`` with its current revision and status, in id order."""
    for task in client.iter_tasks(project):
        try:
            event = task_to_event(task, options, project)
        except SourceFormatError:
            key, revision = _safe_key(project, task, options), task_revision(task)
            yield ListedTask(external_id=task["id"], task_id=key, revision=revision, status=FAILED)
            continue
        yield ListedTask(
            external_id=task["id"],
            task_id=event.task_id,
            revision=event.revision,
            status=str(event.status),
        )


# --- backfill, then follow ---------------------------------------------------------------

RESTART_AFTER_S = 30.0
"""A follower that could not even start (catalog or broker down) tries again this much later."""


def start_following(settings: Settings, stop: threading.Event) -> threading.Thread | None:
    """A thread backfilling, then polling the configured project until ``stop`` is set (what
    ``labelflow up`` runs); None when no Label Studio project is configured."""
    if not (settings.uses_labelstudio and settings.labelstudio_project is not None):
        return None

    def follow() -> None:
        while not stop.is_set():
            try:
                with open_follower(settings) as follower:
                    follower.run(stop)
            except Exception:  # a follower must outlive what stops one run; it logs why
                log.exception("label studio follower failed; restarting")
                stop.wait(RESTART_AFTER_S)

    thread = threading.Thread(target=follow, name="labelstudio-follow", daemon=True)
    thread.start()
    return thread


@contextmanager
def open_follower(settings: Settings) -> Iterator[LabelStudioFollower]:
    """The follower of the project in ``settings``, publishing to ``sources.changes``."""
    from labelflow.catalog.store import Catalog
    from labelflow.sources.publish import HintPublisher

    url, token, project = (
        settings.labelstudio_url,
        settings.labelstudio_token,
        settings.labelstudio_project,
    )
    if not (url and token and project is not None):
        raise LabelflowError(
            "no Label Studio project to follow",
            hint="run labelflow source add labelstudio --url … --project … --token …",
        )
    client = LabelStudioClient(
        url, token.get_secret_value(), page_size=settings.labelstudio_page_size
    )
    with client, Catalog(settings.resolved_catalog_url) as catalog:
        catalog.migrate()
        publisher = HintPublisher(settings)
        yield LabelStudioFollower(
            client,
            SourceState(catalog),
            publisher.publish_all,
            project,
            interval_s=settings.labelstudio_poll_interval_s,
        )


Publish = Callable[[Sequence[TaskChanged]], None]
"""Delivers hints durably (returns once the broker acknowledged them all)."""


class LabelStudioFollower:
    """Backfills a project once, then polls it for changes; hints go to ``publish``.

    The cursor (``source_cursors``) is saved only after ``publish`` returned, so a stop at any
    point lists again what may not have arrived — never skips it. Duplicates that this causes
    are dropped by the reader's claims.
    """

    def __init__(
        self,
        client: LabelStudioClient,
        state: SourceState,
        publish: Publish,
        project: int,
        *,
        interval_s: float = 5.0,
        source: str = "labelstudio",
    ) -> None:
        self.client = client
        self.state = state
        self.publish = publish
        self.project = project
        self.interval_s = interval_s
        self.hint_source = source
        self.source = source_of(source, project)

    @property
    def backfilled(self) -> bool:
        return self.state.cursor(self.source).get("phase") == "follow"

    def run(self, stop: threading.Event) -> None:
        """Backfill and poll until ``stop`` is set; failures are logged and retried."""
        failures = 0
        while not stop.is_set():
            try:
                self.run_once()
                failures = 0
                wait = self.interval_s
            except (ClassifiedError, LabelflowError) as exc:  # LabelflowError: hints undelivered
                wait = ERROR_BACKOFF_S[min(failures, len(ERROR_BACKOFF_S) - 1)]
                failures += 1
                log.warning(
                    "label studio poll failed, retrying in %.0f s: %s",
                    wait,
                    exc,
                    extra={"project": self.project, "code": getattr(exc, "code", None)},
                )
            stop.wait(wait)

    def run_once(self) -> int:
        """Finish the backfill, or poll once; how many tasks were hinted."""
        cursor = self.state.cursor(self.source)
        if cursor.get("phase") != "follow":
            return self._backfill(cursor)
        return self._poll(cursor)

    def _backfill(self, cursor: dict[str, Any]) -> int:
        """1. note the newest ``updated_at`` (the poll starts there, so a task changed while
        the backfill runs is caught); 2. list by id after the last id listed, a page at a
        time, saving the cursor after each page is delivered; 3. switch to polling."""
        # 1.
        if "since" not in cursor:
            newest = self.client.tasks_page(self.project, ordering=["-tasks:updated_at"])
            cursor = {"phase": "backfill", "after_id": 0, "since": _newest(newest)}
            self.state.save_cursor(self.source, cursor)
        # 2.
        hinted = 0
        horizon = _time(cursor["since"]) - timedelta(seconds=OVERLAP_S)
        while True:
            page = self.client.tasks_page(
                self.project, filters=[id_after(cursor["after_id"])], ordering=["tasks:id"]
            )
            if page:
                self._publish(page)
                hinted += len(page)
                # The first poll looks back over the overlap: what this listing hinted there
                # need not be hinted again.
                recent = {
                    str(t["id"]): t["updated_at"]
                    for t in page
                    if _time(t.get("updated_at")) >= horizon
                }
                cursor = {
                    **cursor,
                    "after_id": max(t["id"] for t in page),
                    "recent": {**cursor.get("recent", {}), **recent},
                }
            if len(page) < self.client.page_size:
                break
            self.state.save_cursor(self.source, cursor)
        # 3.
        self.state.save_cursor(
            self.source,
            {"phase": "follow", "since": cursor["since"], "recent": cursor.get("recent", {})},
        )
        log.info("label studio backfill done", extra={"project": self.project, "tasks": hinted})
        return hinted

    def _poll(self, cursor: dict[str, Any]) -> int:
        """Tasks updated since the last poll (less :data:`OVERLAP_S`), in keyset order
        (``updated_at``, then id), so a task changed during the listing moves later and is
        never skipped; an instant holding a whole page is listed by id."""
        since = _time(cursor.get("since"))
        recent: dict[str, str] = dict(cursor.get("recent") or {})
        hinted = 0

        def take(page: list[dict[str, Any]]) -> None:
            nonlocal hinted
            fresh = [t for t in page if recent.get(str(t["id"])) != t.get("updated_at")]
            if fresh:
                self._publish(fresh)
                hinted += len(fresh)
            recent.update({str(t["id"]): t.get("updated_at") for t in page})

        lower, inclusive = since - timedelta(seconds=OVERLAP_S), True
        newest = since
        while True:
            page = self.client.tasks_page(
                self.project,
                filters=[updated_since(_text(lower), inclusive=inclusive)],
                ordering=["tasks:updated_at", "tasks:id"],
            )
            take(page)
            times = [_time(t.get("updated_at")) for t in page]
            newest = max([newest, *times])
            if len(page) < self.client.page_size:
                break
            top = max(times)
            if min(times) == top:  # one instant fills the page: list it by id
                last_id = max(t["id"] for t in page)
                while True:
                    tie = self.client.tasks_page(
                        self.project,
                        filters=[
                            updated_since(_text(top)),
                            updated_until(_text(top)),
                            id_after(last_id),
                        ],
                        ordering=["tasks:id"],
                    )
                    take(tie)
                    if len(tie) < self.client.page_size:
                        break
                    last_id = max(t["id"] for t in tie)
                lower, inclusive = top, False
            else:
                lower, inclusive = top, True
        horizon = newest - timedelta(seconds=OVERLAP_S)
        recent = {k: v for k, v in recent.items() if _time(v) >= horizon}
        self.state.save_cursor(
            self.source, {"phase": "follow", "since": _text(newest), "recent": recent}
        )
        return hinted

    def _publish(self, tasks: list[dict[str, Any]]) -> None:
        self.publish([self._hint(task) for task in tasks])

    def _hint(self, task: dict[str, Any]) -> TaskChanged:
        hint = TaskChanged(
            source=self.hint_source,
            project=self.project,
            task_ids=(task["id"],),
            action="TASKS_LISTED",
            snapshot=task,
        )
        if len(hint.model_dump_json()) > MAX_SNAPSHOT_BYTES:
            return hint.model_copy(update={"snapshot": None})
        return hint


def _newest(page: list[dict[str, Any]]) -> str:
    """The ``updated_at`` of the first task (the newest, by the ordering asked for)."""
    return _text(_time(page[0].get("updated_at"))) if page else _text(EPOCH)


def _time(value: Any) -> datetime:
    when = parse_time(value)
    if when is None:
        raise PermanentError("labelstudio.invalid_task", f"a task without updated_at: {value!r}")
    return when.astimezone(UTC)


def _text(when: datetime) -> str:
    """Label Studio's own time format, microseconds kept (its filters compare them)."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
