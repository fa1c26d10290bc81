"""The catalog's tables, as SQLAlchemy 2.0 ORM classes.

Three tables for samples, because "what is current" and "what ever was" answer different
questions:

- ``samples``: one row per sample id, the state a training loader sees now — the current
  revision, whether it is deleted, and the hashes of the live version's artifacts.
- ``sample_versions``: every version ever committed, keyed by (sample id, revision), with its
  georeference, class pixel counts, QC results and lineage. Never deleted, so ``explain`` and
  snapshot diffs can reach any past version.
- ``sample_tombstones``: every deletion, keyed the same way, with who/what asked for it.

And what the sources remember between runs (:mod:`labelflow.sources.state`):

- ``source_tasks``: per task of a source, the last revision emitted into the pipeline, so a
  re-read of an unchanged task (a repeated webhook, a poll) emits nothing again;
- ``source_annotations``: which task an annotation id belongs to, for hints that name only
  annotations;
- ``source_cursors``: where listing a source stopped, so a backfill or a poll resumes;
- ``taxonomy_classes``: the class index each label got, never renumbered.

And what the reconciler records (:mod:`labelflow.reconcile`): ``reconcile_runs``, one row per
run, and ``reconcile_repairs``, the last repair emitted per task.

Changing a table means a new Alembic revision under ``migrations/versions``; the ORM classes
here are the migrations' target, never created with ``metadata.create_all``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

from sqlalchemy import JSON, BigInteger, Boolean, DateTime, Float, Integer, String
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

SAMPLE_ID_LENGTH = 512
"""Matches the longest task id an :class:`~labelflow.model.AnnotationEvent` accepts."""

HASH_LENGTH = 64
"""A sha256 in hex: the blob key of an artifact."""

JsonType = JSON().with_variant(JSONB(), "postgresql")


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {dict[str, Any]: JsonType, list[Any]: JsonType}


class RevisionKey:
    """History rows are keyed by (sample id, revision): one row per revision, replays upsert."""

    sample_id: Mapped[str] = mapped_column(String(SAMPLE_ID_LENGTH), primary_key=True)
    revision: Mapped[int] = mapped_column(BigInteger, primary_key=True)


class KafkaPosition:
    """Where the record that caused a write was consumed, to find and replay it."""

    kafka_topic: Mapped[str | None] = mapped_column(String)
    kafka_partition: Mapped[int | None] = mapped_column(Integer)
    kafka_offset: Mapped[int | None] = mapped_column(BigInteger)


class SampleRow(Base):
    """Current state of one sample: the highest revision seen, live or deleted."""

    __tablename__ = "samples"

    sample_id: Mapped[str] = mapped_column(String(SAMPLE_ID_LENGTH), primary_key=True)
    revision: Mapped[int] = mapped_column(BigInteger)
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    image_hash: Mapped[str | None] = mapped_column(String(HASH_LENGTH))
    mask_hash: Mapped[str | None] = mapped_column(String(HASH_LENGTH))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class SampleVersionRow(RevisionKey, KafkaPosition, Base):
    """One committed sample version (see :class:`~labelflow.model.SampleVersion`)."""

    __tablename__ = "sample_versions"
    schema_version: Mapped[int] = mapped_column(Integer)
    image_hash: Mapped[str] = mapped_column(String(HASH_LENGTH))
    mask_hash: Mapped[str] = mapped_column(String(HASH_LENGTH))
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    crs: Mapped[str | None] = mapped_column(String)
    transform: Mapped[list[Any] | None]
    bounds: Mapped[list[Any] | None]
    class_pixels: Mapped[dict[str, Any]]
    features: Mapped[list[Any]]
    checks: Mapped[list[Any]]
    # Lineage, as columns so "which samples came from this image / code version" is a query.
    source: Mapped[str] = mapped_column(String)
    event_id: Mapped[str] = mapped_column(String(64))
    image_uri: Mapped[str] = mapped_column(String)
    image_content_hash: Mapped[str] = mapped_column(String(HASH_LENGTH), index=True)
    code_version: Mapped[str] = mapped_column(String, index=True)
    config_hash: Mapped[str] = mapped_column(String)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    committed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class SampleTombstoneRow(RevisionKey, KafkaPosition, Base):
    """One deletion of a sample at a revision (a rejected, skipped or deleted task)."""

    __tablename__ = "sample_tombstones"
    reason: Mapped[str] = mapped_column(String)
    source: Mapped[str | None] = mapped_column(String)
    event_id: Mapped[str | None] = mapped_column(String(64))
    committed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


SOURCE_LENGTH = 128
"""A source namespace such as ``labelstudio:12`` (a tool and its project)."""


class SourceTaskRow(Base):
    """The last revision of one external task emitted into ``annotations.raw``."""

    __tablename__ = "source_tasks"

    source: Mapped[str] = mapped_column(String(SOURCE_LENGTH), primary_key=True)
    external_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    task_id: Mapped[str] = mapped_column(String(SAMPLE_ID_LENGTH))
    revision: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(16))
    emitted_by: Mapped[str] = mapped_column(String)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class SourceAnnotationRow(Base):
    """Which external task an external annotation id belongs to."""

    __tablename__ = "source_annotations"

    source: Mapped[str] = mapped_column(String(SOURCE_LENGTH), primary_key=True)
    annotation_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    external_id: Mapped[int] = mapped_column(BigInteger)


class SourceCursorRow(Base):
    """Where listing a source stopped (its shape belongs to the source)."""

    __tablename__ = "source_cursors"

    source: Mapped[str] = mapped_column(String(SOURCE_LENGTH), primary_key=True)
    cursor: Mapped[dict[str, Any]]
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class TaxonomyClassRow(Base):
    """A class name and the mask index it was given once and keeps."""

    __tablename__ = "taxonomy_classes"

    name: Mapped[str] = mapped_column(String(256), primary_key=True)
    index: Mapped[int] = mapped_column(Integer, unique=True)
    origin: Mapped[str] = mapped_column(String(SOURCE_LENGTH))
    removed: Mapped[bool] = mapped_column(Boolean, default=False)
    assigned_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ReconcileRunRow(Base):
    """One run of the reconciler (:mod:`labelflow.reconcile`): what it found and did."""

    __tablename__ = "reconcile_runs"

    run_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    source: Mapped[str] = mapped_column(String(SOURCE_LENGTH))
    dry_run: Mapped[bool] = mapped_column(Boolean)
    outcome: Mapped[str] = mapped_column(String(16))
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    duration_s: Mapped[float] = mapped_column(Float)
    listed: Mapped[int] = mapped_column(BigInteger)
    catalogued: Mapped[int] = mapped_column(BigInteger)
    repairs: Mapped[int] = mapped_column(BigInteger)
    counts: Mapped[dict[str, Any]]
    examples: Mapped[dict[str, Any]]
    error: Mapped[str | None] = mapped_column(String)


class ReconcileRepairRow(Base):
    """The last repair the reconciler emitted for a task: the bound after which a task still
    not committed is *stuck*, and the cap on repeating it."""

    __tablename__ = "reconcile_repairs"

    source: Mapped[str] = mapped_column(String(SOURCE_LENGTH), primary_key=True)
    task_id: Mapped[str] = mapped_column(String(SAMPLE_ID_LENGTH), primary_key=True)
    revision: Mapped[int] = mapped_column(BigInteger)
    category: Mapped[str] = mapped_column(String(32))
    attempts: Mapped[int] = mapped_column(Integer)
    first_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    run_id: Mapped[str] = mapped_column(String(32))
