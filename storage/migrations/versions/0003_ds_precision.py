"""ds precision: the decimal places the effective Pixel Spacing was written with (rule 31)

The series consensus groups the instances' effective spacing in SQL by value *and* decimal
places, and merges the groups that agree to the precision of the less precise one
(``scp.pipeline.compare.agree``): 0.976562 and 0.9765625 are one spacing. NULL: precision
unknown (a binary value, or a row indexed before this revision: ``reindex`` fills it).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30 02:50:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("instances", schema=None) as batch_op:
        batch_op.add_column(sa.Column("pixel_spacing_row_decimals", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("pixel_spacing_column_decimals", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("instances", schema=None) as batch_op:
        batch_op.drop_column("pixel_spacing_column_decimals")
        batch_op.drop_column("pixel_spacing_row_decimals")
