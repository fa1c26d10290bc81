"""Reconciliation: every run of the reconciler, and the repairs it emitted per task.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "reconcile_runs",
        sa.Column("run_id", sa.String(32), primary_key=True),
        sa.Column("source", sa.String(128), nullable=False),
        sa.Column("dry_run", sa.Boolean(), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("duration_s", sa.Float(), nullable=False),
        sa.Column("listed", sa.BigInteger(), nullable=False),
        sa.Column("catalogued", sa.BigInteger(), nullable=False),
        sa.Column("repairs", sa.BigInteger(), nullable=False),
        sa.Column("counts", JSON, nullable=False),
        sa.Column("examples", JSON, nullable=False),
        sa.Column("error", sa.String(), nullable=True),
    )
    op.create_index("ix_reconcile_runs_started_at", "reconcile_runs", ["started_at"])
    op.create_table(
        "reconcile_repairs",
        sa.Column("source", sa.String(128), primary_key=True),
        sa.Column("task_id", sa.String(512), primary_key=True),
        sa.Column("revision", sa.BigInteger(), nullable=False),
        sa.Column("category", sa.String(32), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("first_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("run_id", sa.String(32), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("reconcile_repairs")
    op.drop_index("ix_reconcile_runs_started_at", "reconcile_runs")
    op.drop_table("reconcile_runs")
