"""Source state: emitted revisions, annotation owners, listing cursors, class indices.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "source_tasks",
        sa.Column("source", sa.String(128), primary_key=True),
        sa.Column("external_id", sa.BigInteger(), primary_key=True),
        sa.Column("task_id", sa.String(512), nullable=False),
        sa.Column("revision", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("emitted_by", sa.String(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "source_annotations",
        sa.Column("source", sa.String(128), primary_key=True),
        sa.Column("annotation_id", sa.BigInteger(), primary_key=True),
        sa.Column("external_id", sa.BigInteger(), nullable=False),
    )
    op.create_table(
        "source_cursors",
        sa.Column("source", sa.String(128), primary_key=True),
        sa.Column("cursor", JSON, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "taxonomy_classes",
        sa.Column("name", sa.String(256), primary_key=True),
        sa.Column("index", sa.Integer(), nullable=False, unique=True),
        sa.Column("origin", sa.String(128), nullable=False),
        sa.Column("removed", sa.Boolean(), nullable=False),
        sa.Column("assigned_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    for table in ("taxonomy_classes", "source_cursors", "source_annotations", "source_tasks"):
        op.drop_table(table)
