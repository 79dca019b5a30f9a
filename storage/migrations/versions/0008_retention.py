"""retention: deletions, files to unlink after a deletion, the pass's lock row, and the
series' count of deleted instances

Revision ID: 0008_retention
Revises: 0007
Create Date: 2026-11-30 05:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008_retention"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("series", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("deleted_instances", sa.Integer(), nullable=False, server_default="0")
        )
    op.create_table(
        "deletions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("level", sa.String(length=16), nullable=False),
        sa.Column("study_instance_uid", sa.String(length=64), nullable=False),
        sa.Column("series_instance_uid", sa.String(length=64), nullable=False),
        sa.Column("sop_instance_uid", sa.String(length=64), nullable=True),
        sa.Column("instances", sa.Integer(), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column("reason", sa.String(length=32), nullable=False),
        sa.Column("actor", sa.String(length=128), nullable=False),
        sa.Column("forced", sa.Boolean(), nullable=False),
        sa.Column("comment", sa.String(length=1024), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_deletions_deleted_at", "deletions", ["deleted_at"])
    op.create_index("ix_deletions_study_instance_uid", "deletions", ["study_instance_uid"])
    op.create_index("ix_deletions_series_instance_uid", "deletions", ["series_instance_uid"])
    op.create_table(
        "pending_unlinks",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("deletion_id", sa.Integer(), nullable=True),
        sa.Column("sop_instance_uid", sa.String(length=64), nullable=False),
        sa.Column("path", sa.String(length=255), nullable=False),
        sa.Column("original_path", sa.String(length=255), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("marked_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_pending_unlinks_deletion_id", "pending_unlinks", ["deletion_id"])
    op.create_table(
        "retention_lock",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("holder", sa.String(length=128), nullable=True),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )


def downgrade() -> None:
    op.drop_table("retention_lock")
    op.drop_index("ix_pending_unlinks_deletion_id", table_name="pending_unlinks")
    op.drop_table("pending_unlinks")
    for name in ("series_instance_uid", "study_instance_uid", "deleted_at"):
        op.drop_index(f"ix_deletions_{name}", table_name="deletions")
    op.drop_table("deletions")
    if op.get_bind().dialect.name == "sqlite":
        op.execute("ALTER TABLE series DROP COLUMN deleted_instances")
    else:
        op.drop_column("series", "deleted_instances")
