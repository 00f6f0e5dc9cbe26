"""Each deadline row names its order's merchant, with a partial index of the open ones, so
grading a violation reads the merchant's overdue open clocks without scanning everyone's.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

OPEN = "state IN ('pending', 'enqueued')"


def upgrade() -> None:
    with op.batch_alter_table("deadlines") as batch:
        batch.add_column(sa.Column("merchant_id", sa.String(length=128), nullable=True))
    op.execute(
        "UPDATE deadlines SET merchant_id = "
        "(SELECT orders.merchant_id FROM orders WHERE orders.order_id = deadlines.order_id)"
    )
    op.create_index(
        "ix_deadlines_merchant_open",
        "deadlines",
        ["merchant_id", "due_at"],
        postgresql_where=sa.text(OPEN),
        sqlite_where=sa.text(OPEN),
    )


def downgrade() -> None:
    op.drop_index("ix_deadlines_merchant_open", table_name="deadlines")
    with op.batch_alter_table("deadlines") as batch:
        batch.drop_column("merchant_id")
