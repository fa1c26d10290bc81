"""What changed between two manifests: samples added, removed, or changed (a new revision or
new artifacts under the same sample id). One join on sample id, in Arrow, so a diff of a
million rows takes about a second and never builds a Python object per row."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

DIFF_SCHEMA = pa.schema(
    [
        ("sample_id", pa.string()),
        ("change", pa.string()),
        ("old_revision", pa.int64()),
        ("new_revision", pa.int64()),
        ("old_split", pa.string()),
        ("new_split", pa.string()),
    ]
)

CHANGES = ("added", "removed", "changed")

DIFF_INPUT = ["sample_id", "revision", "image_hash", "mask_hash", "split"]
"""The manifest columns a diff reads (the rest of a parent's manifest stays on disk)."""


def diff(old: pa.Table, new: pa.Table) -> pa.Table:
    """One row per sample id that differs between ``old`` and ``new``, ordered by id:
    ``added`` (only in new), ``removed`` (only in old), ``changed`` (revision, image or
    mask differs)."""
    left = _side(old, "old")
    right = _side(new, "new")
    joined = left.join(right, keys="sample_id", join_type="full outer")
    in_old = pc.is_valid(joined.column("old_revision"))
    in_new = pc.is_valid(joined.column("new_revision"))
    differs = pc.or_(
        pc.or_(
            pc.not_equal(joined.column("old_revision"), joined.column("new_revision")),
            pc.not_equal(joined.column("old_image"), joined.column("new_image")),
        ),
        pc.not_equal(joined.column("old_mask"), joined.column("new_mask")),
    )
    change = pc.if_else(
        pc.invert(in_old),
        "added",
        pc.if_else(pc.invert(in_new), "removed", pc.if_else(differs, "changed", None)),
    )
    out = pa.table(
        {
            "sample_id": joined.column("sample_id"),
            "change": change,
            "old_revision": joined.column("old_revision"),
            "new_revision": joined.column("new_revision"),
            "old_split": joined.column("old_split"),
            "new_split": joined.column("new_split"),
        },
        schema=DIFF_SCHEMA,
    )
    return out.filter(pc.is_valid(out.column("change"))).sort_by("sample_id")


def summary(changes: pa.Table) -> dict[str, int]:
    """How many of each change."""
    counts = pc.value_counts(changes.column("change"))
    found = dict(
        zip(counts.field("values").to_pylist(), counts.field("counts").to_pylist(), strict=True)
    )
    return {c: int(found.get(c, 0)) for c in CHANGES}


def _side(table: pa.Table, prefix: str) -> pa.Table:
    split = (
        table.column("split")
        if "split" in table.column_names
        else pa.nulls(table.num_rows, pa.string())
    )
    return pa.table(
        {
            "sample_id": table.column("sample_id"),
            f"{prefix}_revision": table.column("revision"),
            f"{prefix}_image": table.column("image_hash"),
            f"{prefix}_mask": table.column("mask_hash"),
            f"{prefix}_split": split,
        }
    )
