"""``labelflow ingest``: annotation files into the pipeline, with every refusal accounted for.

For each file:

1. read it (:func:`~labelflow.sources.files.read_file`). A file that is no export at all is
   reported with its code; otherwise each unit (task, image) is an event or a refusal;
2. encode each event; one larger than ``annotations.raw`` takes (the validation rules'
   ``max_payload_bytes``) is refused as ``payload.too_large`` before it reaches the producer;
3. send the events to ``annotations.raw``. The Kafka client and broker have limits of their
   own, which can be lower: a record they refuse as too large is refused the same way. The
   broker judges whole batches, so a batch it refuses is sent again one record per batch,
   and only a record refused on its own is too large (its neighbours were not);
4. publish each refusal to ``annotations.quarantine`` as a :class:`Quarantined` of stage
   ``ingest`` (``labelflow quarantine list`` shows them), unless one with the same
   fingerprint is already there: ingesting the same file again quarantines its bad tasks
   once. The fingerprint is a hash of the refused unit's own content, so it also holds when
   other tasks of the file were edited in between.

Nothing a file contains may end the run with a traceback: an unforeseen failure while reading
one file is reported as that file's refusal (``file.unreadable``) and the next file is read.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from labelflow.config import Settings
from labelflow.events import encode
from labelflow.kafka.quarantine import INGEST_FINGERPRINT, read_quarantine
from labelflow.model import AnnotationEvent, Quarantined, Reason
from labelflow.sources.base import Refused, SourceFormatError
from labelflow.sources.files import FileOptions, FileRead, read_file
from labelflow.sources.publish import PayloadTooLarge, RawPublisher

log = logging.getLogger(__name__)

STAGE = "ingest"
FILE_PATTERNS = (".json", ".geojson")
MAX_SHOWN_PER_FILE = 20
"""Refusals printed one by one per file; a file of ten thousand bad tasks would otherwise
bury the summary (which counts them all, and the quarantine holds them all)."""


def encoded(read: FileRead, max_bytes: int) -> list[tuple[AnnotationEvent, bytes] | Refused]:
    """Each unit of ``read`` as the record to send, or its refusal; an event whose record
    would exceed ``max_bytes`` is refused (``payload.too_large``)."""
    out: list[tuple[AnnotationEvent, bytes] | Refused] = []
    for index, item in enumerate(read.items):
        if isinstance(item, Refused):
            out.append(item)
            continue
        value = encode(item)
        if len(value) > max_bytes:
            out.append(too_large(item.task_id, value, index, f"exceeds the limit of {max_bytes}"))
        else:
            out.append((item, value))
    return out


def too_large(task_id: str, value: bytes, index: int, why: str) -> Refused:
    return Refused.of(
        "payload.too_large",
        f"task {task_id!r} (#{index}): its event is {len(value)} bytes, which {why}",
        index,
        value.decode(errors="replace"),
        task_id,
    )


def find_files(paths: list[Path]) -> list[Path]:
    """The annotation files among ``paths``: files as given, folders searched recursively."""
    return [
        f
        for p in paths
        for f in (sorted(p.rglob("*")) if p.is_dir() else [p])
        if f.suffix in FILE_PATTERNS and (f.is_file() or not p.is_dir())
    ]


@dataclass
class Summary:
    """What a run did: files read, revisions sent, refusals by code."""

    files: int = 0
    files_refused: int = 0
    sent: int = 0
    refused: Counter[str] = field(default_factory=Counter)
    quarantined: int = 0
    already_quarantined: int = 0

    @property
    def clean(self) -> bool:
        return not self.refused


Report = Callable[[str, str], None]
"""``report(kind, text)``: ``kind`` is ``read`` (a file done), ``refused`` (one unit) or
``file`` (a whole file refused)."""


class Ingest:
    """One run of ``labelflow ingest`` over any number of files."""

    def __init__(
        self, settings: Settings, options: FileOptions | None = None, report: Report | None = None
    ) -> None:
        self.settings = settings
        self.options = options or FileOptions()
        self.report = report or (lambda _kind, _text: None)
        self.summary = Summary()
        self.publisher = RawPublisher(settings, on_too_large=self._refused_in_batch)
        self._in_flight: dict[tuple[bytes, str], tuple[Path, int]] = {}
        self._batch_refused: list[tuple[bytes, bytes]] = []
        self._known: set[str] | None = None
        self._shown: Counter[Path] = Counter()

    def run(self, files: list[Path]) -> Summary:
        for path in files:
            self.file(path)
        self.publisher.flush()  # delivery reports, "too large" ones among them, arrive here
        if self._batch_refused:
            alone = RawPublisher(
                self.settings, self._refused_alone, {"batch.num.messages": 1, "linger.ms": 0}
            )
            for key, value in self._batch_refused:
                alone.publish_raw(key.decode(errors="replace"), value)
            alone.flush()
        self.publisher.flush()  # the quarantine records of what was refused alone
        return self.summary

    def file(self, path: Path) -> None:
        self.summary.files += 1
        try:
            read = read_file(path, self.options)
        except SourceFormatError as exc:
            self._file_refused(path, exc.code, exc.message)
            return
        except Exception as exc:  # any input gets a report, never a traceback
            log.debug("reading %s failed", path, exc_info=True)
            self._file_refused(path, "file.unreadable", f"{path}: {type(exc).__name__}: {exc}")
            return
        sent = refused = 0
        for index, item in enumerate(encoded(read, self.settings.validation.max_payload_bytes)):
            if isinstance(item, Refused):
                self._refuse(path, item)
                refused += 1
                continue
            event, value = item
            try:
                self.publisher.publish_raw(event.task_id, value)
            except PayloadTooLarge:
                why = "the Kafka client refuses (its message.max.bytes)"
                self._refuse(path, too_large(event.task_id, value, index, why))
                refused += 1
                continue
            self._in_flight[(event.task_id.encode(), _digest(value))] = (path, index)
            sent += 1
        self.summary.sent += sent
        self.report("read", f"{path} ({read.format}): {sent} revision(s) sent, {refused} refused")

    def _file_refused(self, path: Path, code: str, message: str) -> None:
        self.summary.files_refused += 1
        self.summary.refused[code] += 1
        self.report("file", f"{code}: {message}")

    def _refuse(self, path: Path, refused: Refused) -> None:
        """Count, report and quarantine one refused unit (once per fingerprint)."""
        self.summary.refused[refused.code] += 1
        self._shown[path] += 1
        if self._shown[path] <= MAX_SHOWN_PER_FILE:
            self.report("refused", f"{path} #{refused.index}: {refused.code}: {refused.message}")
        elif self._shown[path] == MAX_SHOWN_PER_FILE + 1:
            self.report("refused", f"{path}: more refusals; the summary counts them all")
        if self._known is None:
            self._known = {h.fingerprint for h in read_quarantine(self.settings) if h.fingerprint}
        if refused.fingerprint in self._known:
            self.summary.already_quarantined += 1
            return
        held = Quarantined(
            stage=STAGE,
            reasons=[Reason(code=refused.code, message=refused.message)],
            task_id=refused.task_id,
            raw_excerpt=refused.excerpt,
            # Not from a topic: the file, no partition, the unit's position in the file.
            source_topic=f"file:{path}",
            source_partition=-1,
            source_offset=refused.index,
        )
        key = refused.task_id or f"{path.name}#{refused.index}"
        self.publisher.quarantine(held, key, [(INGEST_FINGERPRINT, refused.fingerprint.encode())])
        self._known.add(refused.fingerprint)
        self.summary.quarantined += 1

    def _refused_in_batch(self, key: bytes | None, value: bytes) -> None:
        self._batch_refused.append((key or b"", value))

    def _refused_alone(self, key: bytes | None, value: bytes) -> None:
        found = self._in_flight.pop((key or b"", _digest(value)), None)
        if found is None:  # not ours: cannot happen with one publisher per run
            log.warning("a record of unknown origin was refused as too large")
            return
        path, index = found
        self.summary.sent -= 1
        task_id = (key or b"").decode(errors="replace")
        self._refuse(path, too_large(task_id, value, index, "the Kafka broker refuses"))


def _digest(value: bytes) -> str:
    return hashlib.sha256(value).hexdigest()
