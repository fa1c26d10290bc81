"""What a snapshot is made with: the split rule and the quality gates (``settings.snapshots``).

Changing the split fields (``salt``, block sizes, fractions, ``grid_crs``) moves samples
between splits: do it only when starting a new line of snapshots, never between a parent and
its child. Every snapshot records the values it was made with.
"""

from __future__ import annotations

from pydantic import BaseModel, Field, model_validator


class SplitRules(BaseModel):
    """Train / val / test by spatial block (see :mod:`labelflow.snapshots.splits`)."""

    salt: str = Field(
        "labelflow-splits-v1",
        min_length=1,
        description="Mixed into every block's hash; a new salt is a new, unrelated assignment.",
    )
    fractions: dict[str, float] = Field(
        default_factory=lambda: {"train": 0.8, "val": 0.1, "test": 0.1},
        description="Share of blocks per split, in this order; they must sum to 1.",
    )
    block_size_m: float = Field(
        1000.0, gt=0, description="Side of a block for georeferenced samples, in metres."
    )
    block_size_px: float = Field(
        2048.0, gt=0, description="Side of a block, in pixels of the scene, without a CRS."
    )
    buffer_m: float = Field(
        50.0,
        ge=0,
        description="Samples closer than this (metres) are never in different splits; a "
        "sample within buffer/2 of a block of another split is excluded.",
    )
    buffer_px: float = Field(64.0, ge=0, description="The same buffer, in pixels, without a CRS.")
    grid_crs: str | None = Field(
        None,
        description="One metric CRS for every georeferenced sample's blocks (e.g. EPSG:3035 "
        "for Europe). Unset: a projected CRS in metres is used as it is, any other is "
        "projected to the UTM zone of the sample's centre.",
    )

    @model_validator(mode="after")
    def _fractions_sum_to_one(self) -> SplitRules:
        if not self.fractions or any(f < 0 for f in self.fractions.values()):
            raise ValueError("split fractions must be non-negative, at least one")
        if abs(sum(self.fractions.values()) - 1.0) > 1e-9:
            raise ValueError(f"split fractions must sum to 1, not {sum(self.fractions.values())}")
        if "excluded" in self.fractions:
            raise ValueError("'excluded' is the name of the buffer, not a split")
        return self


class GateRules(BaseModel):
    """The quality gates a snapshot passes before it is published (``--force`` overrides)."""

    min_samples_per_class: int = Field(
        1, ge=0, description="Every taxonomy class is present in at least this many samples."
    )
    max_class_shift: float = Field(
        0.25,
        ge=0,
        le=1,
        description="Largest total-variation distance between the class pixel distribution "
        "of the snapshot and of its parent (0: identical, 1: disjoint).",
    )
    max_failed_members: int = Field(
        0, ge=0, description="Members whose recorded checks failed, at most."
    )


class SnapshotSettings(BaseModel):
    """Snapshot settings: ``[snapshots.splits]`` / ``[snapshots.gates]`` in ``labelflow.toml``,
    or ``LABELFLOW_SNAPSHOTS`` as JSON."""

    splits: SplitRules = Field(default_factory=SplitRules)
    gates: GateRules = Field(default_factory=GateRules)
    cache_dir: str | None = Field(
        None, description="The loader's local blob cache; <data dir>/cache/blobs if unset."
    )
