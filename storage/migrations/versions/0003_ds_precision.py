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

import re

import sqlalchemy as sa
from alembic import op

#: One DS value (rulebook rule 1): the decimal places are fraction digits minus exponent.
_DS = re.compile(r" *[+-]?([0-9]+|[0-9]+\.[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)? *")

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("instances", schema=None) as batch_op:
        batch_op.add_column(sa.Column("pixel_spacing_row_decimals", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("pixel_spacing_column_decimals", sa.Integer(), nullable=True))

    _backfill()


def _decimals(text: str) -> tuple[float, int] | None:
    if not _DS.fullmatch(text):
        return None
    mantissa, _, exponent = text.strip(" ").lower().partition("e")
    decimals = len(mantissa.partition(".")[2]) - (int(exponent) if exponent else 0)
    return float(text), decimals


def _backfill() -> None:
    bind = op.get_bind()
    rows = bind.execute(
        sa.text(
            "SELECT id, received_pixel_spacing, pixel_spacing_row_mm, pixel_spacing_column_mm "
            "FROM instances WHERE received_pixel_spacing IS NOT NULL "
            "AND pixel_spacing_row_mm IS NOT NULL AND pixel_spacing_column_mm IS NOT NULL"
        )
    ).all()
    update = sa.text(
        "UPDATE instances SET pixel_spacing_row_decimals = :row, "
        "pixel_spacing_column_decimals = :col WHERE id = :id"
    )
    for row_id, text, row_mm, col_mm in rows:
        parts = [_decimals(p) for p in str(text).rstrip(" \x00").split("\\")]
        if len(parts) != 2 or parts[0] is None or parts[1] is None:
            continue
        (row, row_d), (col, col_d) = parts[0], parts[1]
        if row == row_mm and col == col_mm:
            bind.execute(update, {"row": row_d, "col": col_d, "id": row_id})


def downgrade() -> None:
    with op.batch_alter_table("instances", schema=None) as batch_op:
        batch_op.drop_column("pixel_spacing_column_decimals")
        batch_op.drop_column("pixel_spacing_row_decimals")
