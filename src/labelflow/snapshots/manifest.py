"""The manifest: the catalog's current sample versions as one columnar table, and its stats.

A manifest row names an exact sample version — (sample id, revision) and the content hashes of
its image and mask — with what a loader, a gate or a diff needs: size, georeference, class
pixel counts, failed checks, lineage, and the split it was given. It is read from the catalog
in one read transaction (``REPEATABLE READ`` on PostgreSQL; SQLite's WAL gives one snapshot
per transaction), together with the catalog state it is consistent with: how many samples,
the newest write, and per Kafka partition the highest offset that reached the catalog.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson
from pydantic import BaseModel, Field
from sqlalchemy import (
    Connection,
    Text,
    and_,
    case,
    cast,
    func,
    literal_column,
    select,
    union_all,
)

from labelflow.catalog.store import Catalog, samples, tombstones, versions
from labelflow.model import as_utc
from labelflow.snapshots.settings import SplitRules
from labelflow.snapshots.splits import EXCLUDED, assign_splits

READ_BATCH = 20_000
"""Rows fetched per round trip (a server-side cursor on PostgreSQL): bounds the memory of the
row objects in flight, while the columns grow."""

SCHEMA = pa.schema(
    [
        ("sample_id", pa.string()),
        ("revision", pa.int64()),
        ("image_hash", pa.string()),
        ("mask_hash", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("crs", pa.string()),
        ("minx", pa.float64()),
        ("miny", pa.float64()),
        ("maxx", pa.float64()),
        ("maxy", pa.float64()),
        ("class_pixels", pa.map_(pa.string(), pa.int64())),
        ("failed_checks", pa.list_(pa.string())),
        ("source", pa.string()),
        ("image_uri", pa.string()),
        ("code_version", pa.string()),
        ("config_hash", pa.string()),
        ("committed_at", pa.timestamp("us", tz="UTC")),
    ]
)
"""The columns read from the catalog; :func:`with_splits` adds ``split``, ``grid``,
``block_x`` and ``block_y``."""


class CatalogState(BaseModel):
    """What the catalog held when a manifest was read from it."""

    live_samples: int
    known_samples: int = Field(description="Live and deleted.")
    last_version_at: datetime | None = Field(description="Newest committed version, any.")
    last_change_at: datetime | None = Field(description="Newest change of a current state.")
    kafka_offsets: dict[str, dict[str, int]] = Field(
        default_factory=dict,
        description="Per topic and partition, the highest offset whose write reached the "
        "catalog (versions and deletions): the snapshot includes everything up to there.",
    )


class ClassStats(BaseModel):
    samples: int = Field(description="Members with at least one pixel of the class.")
    pixels: int
    share: float = Field(description="Of all labelled (non-background) pixels.")


class Stats(BaseModel):
    """Counts a snapshot is described and gated by."""

    samples: int
    splits: dict[str, int]
    pixels: int = Field(description="All pixels of all chips.")
    labelled_pixels: int
    classes: dict[str, ClassStats]
    failed_members: int
    code_versions: dict[str, int]


PLAIN_COLUMNS = (
    "sample_id",
    "revision",
    "image_hash",
    "mask_hash",
    "width",
    "height",
    "crs",
    "source",
    "image_uri",
    "code_version",
    "config_hash",
    "committed_at",
)
"""Columns read as they are; ``bounds`` (``b``), ``class_pixels`` (``c``) and ``checks``
(``k``) are JSON documents turned into columns after parsing."""

_ROW_SCHEMA = pa.schema(
    [
        *(SCHEMA.field(name) for name in PLAIN_COLUMNS),
        ("b", pa.list_(pa.float64())),
        (
            "k",
            pa.list_(
                pa.struct(
                    [
                        ("code", pa.string()),
                        ("passed", pa.bool_()),
                        ("value", pa.float64()),
                        ("threshold", pa.float64()),
                        ("message", pa.string()),
                    ]
                )
            ),
        ),
    ]
)
"""How each row's JSON object is parsed; ``c`` is left to inference (its keys are the class
names, a struct field each)."""


def read_catalog(catalog: Catalog) -> tuple[pa.Table, CatalogState]:
    """Every live sample's current version, ordered by sample id, and the catalog's state,
    both from one read transaction."""
    batches: list[pa.RecordBatch] = []
    with catalog.transaction() as conn:
        if conn.dialect.name == "postgresql":
            # Must be the transaction's first statement; every read below then sees one
            # snapshot of the database, as SQLite's WAL does within a transaction.
            conn.exec_driver_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        for rows in _current_rows(conn):
            batches.append(_batch(rows))
        state = _state(conn)
    return pa.Table.from_batches(batches, schema=SCHEMA), state


def _current_rows(conn: Connection) -> Iterator[list[Any]]:
    """Each current version as one JSON object, built by the database.

    Python handling each value of each row (SQLAlchemy's result processing, ``json.loads``
    of the JSON columns, building Arrow arrays from Python objects) was nine tenths of the
    read; one string per row, parsed a batch at a time by Arrow's JSON reader, leaves the
    driver's fetch as the main cost.
    """
    v = versions.c
    postgres = conn.dialect.name == "postgresql"
    build = func.json_build_object if postgres else func.json_object
    pairs: list[Any] = []
    for name in PLAIN_COLUMNS:
        pairs += [literal_column(f"'{name}'"), v[name]]
    for key, column in (("b", v.bounds), ("c", v.class_pixels), ("k", v.checks)):
        # SQLite keeps JSON as text: json() embeds it as a document rather than a string.
        pairs += [literal_column(f"'{key}'"), column if postgres else func.json(column)]
    query = (
        select(cast(build(*pairs), Text))
        .join(
            samples,
            and_(samples.c.sample_id == v.sample_id, samples.c.revision == v.revision),
        )
        .where(~samples.c.deleted)
        .order_by(v.sample_id)
        .execution_options(yield_per=READ_BATCH)
    )
    yield from conn.execute(query).partitions()


def _batch(rows: list[Any]) -> pa.RecordBatch:
    """Rows of :func:`_current_rows` as one record batch of :data:`SCHEMA`."""
    n = len(rows)
    text = "\n".join([row[0] for row in rows])
    parsed = pajson.read_json(
        io.BytesIO(text.encode()),
        parse_options=pajson.ParseOptions(
            explicit_schema=_ROW_SCHEMA, unexpected_field_behavior="infer"
        ),
    )
    arrays: dict[str, pa.Array | pa.ChunkedArray] = {
        name: parsed.column(name) for name in PLAIN_COLUMNS
    }
    bounds = parsed.column("b")
    for i, name in enumerate(("minx", "miny", "maxx", "maxy")):
        arrays[name] = pc.list_element(bounds, i)
    arrays["class_pixels"] = _struct_to_map(parsed.column("c").combine_chunks(), n)
    arrays["failed_checks"] = _failed_codes(parsed.column("k").combine_chunks(), n)
    return pa.RecordBatch.from_arrays(
        [_single(arrays[name]) for name in SCHEMA.names], schema=SCHEMA
    )


def _struct_to_map(counts: pa.StructArray, n: int) -> pa.MapArray:
    """``{"building": 3, …}`` parsed as a struct (a field per class) → a map per row."""
    names = [counts.type.field(i).name for i in range(counts.type.num_fields)]
    if not names:
        return pa.MapArray.from_arrays(
            np.zeros(n + 1, np.int32), pa.array([], pa.string()), pa.array([], pa.int64())
        )
    fields = [counts.field(i).cast(pa.int64()) for i in range(len(names))]
    valid = np.stack([f.is_valid().to_numpy(zero_copy_only=False) for f in fields], axis=1)
    values = np.stack([f.fill_null(0).to_numpy() for f in fields], axis=1)
    offsets = np.concatenate([[0], np.cumsum(valid.sum(axis=1))]).astype(np.int32)
    keys = np.tile(np.array(names, dtype=object), n)[valid.ravel()]
    return pa.MapArray.from_arrays(
        offsets, pa.array(keys, pa.string()), pa.array(values.ravel()[valid.ravel()], pa.int64())
    )


def _failed_codes(checks: pa.ListArray, n: int) -> pa.ListArray:
    """The codes of each row's checks that did not pass."""
    flat = pc.list_flatten(checks)
    parents = pc.list_parent_indices(checks)
    failed = pc.invert(pc.fill_null(flat.field("passed"), True))
    codes = flat.field("code").filter(failed)
    owners = parents.filter(failed).to_numpy()
    offsets = np.searchsorted(owners, np.arange(n + 1)).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), codes)


def _single(array: pa.Array | pa.ChunkedArray) -> pa.Array:
    return array.combine_chunks() if isinstance(array, pa.ChunkedArray) else array


def _state(conn: Connection) -> CatalogState:
    live = func.sum(case((samples.c.deleted, 0), else_=1))
    known, live_count, last_change = conn.execute(
        select(func.count(), live, func.max(samples.c.updated_at))
    ).one()
    last_version = conn.execute(select(func.max(versions.c.committed_at))).scalar_one()
    positions = union_all(
        *(
            select(t.c.kafka_topic, t.c.kafka_partition, func.max(t.c.kafka_offset).label("o"))
            .where(t.c.kafka_topic.is_not(None))
            .group_by(t.c.kafka_topic, t.c.kafka_partition)
            for t in (versions, tombstones)
        )
    ).subquery()
    offsets: dict[str, dict[str, int]] = {}
    for topic, partition, offset in conn.execute(
        select(positions.c.kafka_topic, positions.c.kafka_partition, func.max(positions.c.o))
        .group_by(positions.c.kafka_topic, positions.c.kafka_partition)
        .order_by(positions.c.kafka_topic, positions.c.kafka_partition)
    ):
        offsets.setdefault(topic, {})[str(partition)] = int(offset)
    return CatalogState(
        live_samples=int(live_count or 0),
        known_samples=int(known),
        last_version_at=_utc(last_version),
        last_change_at=_utc(last_change),
        kafka_offsets=offsets,
    )


def _utc(value: datetime | None) -> datetime | None:
    return None if value is None else as_utc(value)


def with_splits(table: pa.Table, rules: SplitRules) -> pa.Table:
    """``table`` with each sample's ``split``, ``grid`` and centre block appended."""
    bounds = np.stack(
        [
            table.column(c).to_numpy(zero_copy_only=False).astype(np.float64)
            for c in ("minx", "miny", "maxx", "maxy")
        ],
        axis=1,
    ).reshape(table.num_rows, 4)
    crs = _shared_strings(table.column("crs"))
    scenes = _shared_strings(table.column("image_uri"))
    assignment = assign_splits(bounds, crs, scenes, rules)
    return (
        table.append_column("split", pa.array(assignment.split, pa.string()))
        .append_column("grid", pa.array(assignment.grid, pa.string()))
        .append_column("block_x", pa.array(assignment.block_x, pa.int64()))
        .append_column("block_y", pa.array(assignment.block_y, pa.int64()))
    )


def _shared_strings(column: pa.ChunkedArray) -> np.ndarray:
    """A string column as an object array whose equal values are one Python string: a few
    distinct CRSs and scenes, not a million copies of them."""
    encoded = column.dictionary_encode().combine_chunks()
    values = np.array([*encoded.dictionary.to_pylist(), None], dtype=object)
    indices = encoded.indices.fill_null(len(encoded.dictionary)).to_numpy()
    return values[indices]


def stats(table: pa.Table, classes: list[str]) -> Stats:
    """Per split sizes, per class sample counts and pixels, failed members, code versions."""
    splits = _value_counts(table.column("split"))
    chunks = table.column("class_pixels").chunks
    keys = pa.concat_arrays([pa.array([], pa.string())] + [c.keys for c in chunks])
    values = pa.concat_arrays([pa.array([], pa.int64())] + [c.items for c in chunks])
    pairs = pa.table({"k": keys, "v": values})
    pairs = pairs.filter(pc.greater(pairs.column("v"), 0))
    grouped = pairs.group_by("k").aggregate([("v", "sum"), ("v", "count")])
    names = grouped.column("k").to_pylist()
    sums = dict(zip(names, grouped.column("v_sum").to_pylist(), strict=True))
    counts = dict(zip(names, grouped.column("v_count").to_pylist(), strict=True))
    per_class: dict[str, ClassStats] = {}
    labelled = int(sum(sums.values()))
    for name in sorted(set(classes) | set(sums)):
        pixels = int(sums.get(name, 0))
        per_class[name] = ClassStats(
            samples=int(counts.get(name, 0)),
            pixels=pixels,
            share=pixels / labelled if labelled else 0.0,
        )
    area = pc.multiply(
        table.column("width").cast(pa.int64()), table.column("height").cast(pa.int64())
    )
    failed = pc.greater(pc.list_value_length(table.column("failed_checks")), 0)
    return Stats(
        samples=table.num_rows,
        splits={s: splits.get(s, 0) for s in sorted(splits, key=_split_order)},
        pixels=int(pc.sum(area).as_py() or 0),
        labelled_pixels=labelled,
        classes=per_class,
        failed_members=int(pc.sum(failed.cast(pa.int64())).as_py() or 0),
        code_versions=_value_counts(table.column("code_version")),
    )


def _value_counts(column: pa.ChunkedArray) -> dict[str, int]:
    counts = pc.value_counts(column)
    return {
        str(v): int(c)
        for v, c in zip(
            counts.field("values").to_pylist(), counts.field("counts").to_pylist(), strict=True
        )
    }


def _split_order(name: str) -> tuple[int, str]:
    known = {"train": 0, "val": 1, "test": 2, EXCLUDED: 9}
    return known.get(name, 5), name
