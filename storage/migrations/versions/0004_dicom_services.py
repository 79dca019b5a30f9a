"""dicom services: Patient's Name (C-FIND), Storage Commitment requests, destinations' commitment

Revision ID: 0004
Revises: 0002
Create Date: 2026-11-30 02:40:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("studies", schema=None) as batch_op:
        batch_op.add_column(sa.Column("patient_name", sa.String(length=324), nullable=True))
        batch_op.create_index(batch_op.f("ix_studies_patient_name"), ["patient_name"], unique=False)
    op.create_table(
        "commitment_requests",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("transaction_uid", sa.String(length=64), nullable=False),
        sa.Column("calling_ae_title", sa.String(length=16), nullable=False),
        sa.Column("called_ae_title", sa.String(length=16), nullable=False),
        sa.Column("refs", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("done_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("commitment_requests", schema=None) as batch_op:
        batch_op.create_index(
            "ix_commitment_requests_due", ["state", "next_attempt_at"], unique=False
        )
    with op.batch_alter_table("forward_jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("commitment_state", sa.String(length=16), nullable=True))
        batch_op.add_column(
            sa.Column("commitment_transaction_uid", sa.String(length=64), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("forward_jobs", schema=None) as batch_op:
        batch_op.drop_column("commitment_transaction_uid")
        batch_op.drop_column("commitment_state")
    with op.batch_alter_table("commitment_requests", schema=None) as batch_op:
        batch_op.drop_index("ix_commitment_requests_due")
    op.drop_table("commitment_requests")
    op.drop_index("ix_studies_patient_name", table_name="studies")
    if op.get_bind().dialect.name == "sqlite":
        # SQLite >= 3.35 drops a column in place; a batch copy would drop the table that
        # series reference (FOREIGN KEY constraint failed).
        op.execute("ALTER TABLE studies DROP COLUMN patient_name")
    else:
        op.drop_column("studies", "patient_name")
