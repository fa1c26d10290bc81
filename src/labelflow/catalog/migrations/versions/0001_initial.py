"""Initial catalog: samples, sample_versions, sample_tombstones.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(JSONB(), "postgresql")


def _version_key() -> list[sa.Column]:
    return [
        sa.Column("sample_id", sa.String(512), primary_key=True),
        sa.Column("revision", sa.BigInteger(), primary_key=True),
    ]


def _kafka_position() -> list[sa.Column]:
    return [
        sa.Column("kafka_topic", sa.String(), nullable=True),
        sa.Column("kafka_partition", sa.Integer(), nullable=True),
        sa.Column("kafka_offset", sa.BigInteger(), nullable=True),
    ]


def upgrade() -> None:
    op.create_table(
        "samples",
        sa.Column("sample_id", sa.String(512), primary_key=True),
        sa.Column("revision", sa.BigInteger(), nullable=False),
        sa.Column("deleted", sa.Boolean(), nullable=False),
        sa.Column("image_hash", sa.String(64), nullable=True),
        sa.Column("mask_hash", sa.String(64), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "sample_versions",
        *_version_key(),
        sa.Column("schema_version", sa.Integer(), nullable=False),
        sa.Column("image_hash", sa.String(64), nullable=False),
        sa.Column("mask_hash", sa.String(64), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("crs", sa.String(), nullable=True),
        sa.Column("transform", JSON, nullable=True),
        sa.Column("bounds", JSON, nullable=True),
        sa.Column("class_pixels", JSON, nullable=False),
        sa.Column("features", JSON, nullable=False),
        sa.Column("checks", JSON, nullable=False),
        sa.Column("source", sa.String(), nullable=False),
        sa.Column("event_id", sa.String(64), nullable=False),
        sa.Column("image_uri", sa.String(), nullable=False),
        sa.Column("image_content_hash", sa.String(64), nullable=False),
        sa.Column("code_version", sa.String(), nullable=False),
        sa.Column("config_hash", sa.String(), nullable=False),
        *_kafka_position(),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("committed_at", sa.DateTime(timezone=True), nullable=False),
    )
    # "Which samples were built from this image / by this code" (reconcile, explain).
    op.create_index(
        "ix_sample_versions_image_content_hash", "sample_versions", ["image_content_hash"]
    )
    op.create_index("ix_sample_versions_code_version", "sample_versions", ["code_version"])
    op.create_table(
        "sample_tombstones",
        *_version_key(),
        sa.Column("reason", sa.String(), nullable=False),
        sa.Column("source", sa.String(), nullable=True),
        sa.Column("event_id", sa.String(64), nullable=True),
        *_kafka_position(),
        sa.Column("committed_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("sample_tombstones")
    op.drop_index("ix_sample_versions_code_version", "sample_versions")
    op.drop_index("ix_sample_versions_image_content_hash", "sample_versions")
    op.drop_table("sample_versions")
    op.drop_table("samples")
