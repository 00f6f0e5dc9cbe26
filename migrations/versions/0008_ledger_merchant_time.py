"""The ledger is read by merchant and time (the rolling standing window): index both, in place
of the merchant-only index, so a window reads only its span of the merchant's entries.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-23
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_points_ledger_merchant_outcome_at", "points_ledger", ["merchant_id", "outcome_at"]
    )
    op.drop_index("ix_points_ledger_merchant_id", table_name="points_ledger")


def downgrade() -> None:
    op.create_index("ix_points_ledger_merchant_id", "points_ledger", ["merchant_id"])
    op.drop_index("ix_points_ledger_merchant_outcome_at", table_name="points_ledger")
