"""web UI: series Software Versions (devices page) and paused forwarding destinations

Revision ID: 0006
Revises: 0002
Create Date: 2026-11-30 02:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("series", schema=None) as batch_op:
        batch_op.add_column(sa.Column("software_versions", sa.String(length=64), nullable=True))
    op.create_table(
        "forward_destinations",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("paused", sa.Boolean(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )


def downgrade() -> None:
    op.drop_table("forward_destinations")
    if op.get_bind().dialect.name == "sqlite":
        # SQLite >= 3.35 drops a column in place; a batch copy would drop the table that
        # instances and positions reference (FOREIGN KEY constraint failed).
        op.execute("ALTER TABLE series DROP COLUMN software_versions")
    else:
        op.drop_column("series", "software_versions")
