"""retention: deletions, files to unlink after a deletion, the pass's lock row, the
series' count of deleted instances, and slice positions that outlive their instance

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


_POSITIONS_COLUMNS = "id, series_id, instance_id, frame_number, stack_key, position_um"


def _positions_table(name: str, on_instance_delete: str, instance_nullable: bool) -> None:
    op.create_table(
        name,
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("series_id", sa.Integer(), nullable=False),
        sa.Column("instance_id", sa.Integer(), nullable=instance_nullable),
        sa.Column("frame_number", sa.Integer(), nullable=True),
        sa.Column("stack_key", sa.String(length=255), nullable=False),
        sa.Column("position_um", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["instance_id"], ["instances.id"], ondelete=on_instance_delete),
        sa.ForeignKeyConstraint(["series_id"], ["series.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )


def _positions_instance_fk(on_delete: str, nullable: bool) -> None:
    """instance_positions.instance_id: ``ON DELETE`` and NULL allowed or not.  SQLite
    cannot alter a constraint: the table (which nothing references) is built anew."""
    if op.get_bind().dialect.name == "sqlite":
        op.drop_index("ix_instance_positions_stack", table_name="instance_positions")
        op.drop_index("ix_instance_positions_instance_id", table_name="instance_positions")
        _positions_table("instance_positions_new", on_delete, nullable)
        op.execute(
            f"INSERT INTO instance_positions_new ({_POSITIONS_COLUMNS}) "
            f"SELECT {_POSITIONS_COLUMNS} FROM instance_positions"
        )
        op.drop_table("instance_positions")
        op.rename_table("instance_positions_new", "instance_positions")
        op.create_index("ix_instance_positions_instance_id", "instance_positions", ["instance_id"])
        op.create_index(
            "ix_instance_positions_stack",
            "instance_positions",
            ["series_id", "stack_key", "position_um"],
        )
        return
    name = "instance_positions_instance_id_fkey"
    op.drop_constraint(name, "instance_positions", type_="foreignkey")
    op.alter_column("instance_positions", "instance_id", nullable=nullable)
    op.create_foreign_key(
        name, "instance_positions", "instances", ["instance_id"], ["id"], ondelete=on_delete
    )


def upgrade() -> None:
    _positions_instance_fk("SET NULL", nullable=True)
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
    op.execute("DELETE FROM instance_positions WHERE instance_id IS NULL")
    _positions_instance_fk("CASCADE", nullable=False)
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
