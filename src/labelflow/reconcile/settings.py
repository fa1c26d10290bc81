"""The reconciler's settings: one nested model of :class:`~labelflow.config.Settings`
(``LABELFLOW_RECONCILE='{"stuck_after_s": 60}'`` or ``[reconcile]`` in labelflow.toml).

Imports nothing but pydantic, so the settings module can import it.
"""

from __future__ import annotations

from pydantic import BaseModel, Field


class ReconcileSettings(BaseModel):
    """How often to reconcile, when a repair counts as stuck, and how often to repeat one."""

    interval_s: float = Field(
        300.0,
        ge=0,
        description="How often `labelflow up` reconciles its configured source (0: never).",
    )
    stuck_after_s: float = Field(
        600.0,
        ge=0,
        description="A revision accepted into the pipeline (emitted by a source or by a "
        "repair) and still not in the catalog this long after is stuck.",
    )
    max_repairs: int = Field(
        3,
        ge=1,
        description="Repairs emitted per task within repair_window_s at most: a repair that "
        "keeps failing shows up as stuck instead of being emitted forever.",
    )
    repair_window_s: float = Field(24 * 3600.0, gt=0, description="The window of max_repairs.")
    examples: int = Field(5, ge=0, description="Task ids kept per drift category in a run.")
