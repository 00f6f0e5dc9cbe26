"""Durable timers and the dead-letter queue: deadlines.enqueued_at, dead_letters.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

ENQUEUED = "state = 'enqueued'"


def upgrade() -> None:
    with op.batch_alter_table("deadlines") as batch_op:
        batch_op.add_column(sa.Column("enqueued_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index(
            "ix_deadlines_due_enqueued",
            ["due_at"],
            postgresql_where=sa.text(ENQUEUED),
            sqlite_where=sa.text(ENQUEUED),
        )
    op.create_table(
        "dead_letters",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("source", sa.String(length=128), nullable=False),
        sa.Column("field", sa.String(length=256), nullable=False),
        sa.Column("reason", sa.String(length=1024), nullable=False),
        sa.Column("content_type", sa.String(length=128), nullable=True),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.Column("replayed_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dead_letters")),
    )
    op.create_index(op.f("ix_dead_letters_received_at"), "dead_letters", ["received_at"])


def downgrade() -> None:
    op.drop_index(op.f("ix_dead_letters_received_at"), table_name="dead_letters")
    op.drop_table("dead_letters")
    with op.batch_alter_table("deadlines") as batch_op:
        batch_op.drop_index(
            "ix_deadlines_due_enqueued",
            postgresql_where=sa.text(ENQUEUED),
            sqlite_where=sa.text(ENQUEUED),
        )
        batch_op.drop_column("enqueued_at")
