"""Pre-breach warnings live in `outcomes` too: an outcome's identity now includes its kind.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

OLD = "uq_outcomes_order_id_rule_subject_at"
NEW = "uq_outcomes_order_id_kind_rule_subject_at"


def upgrade() -> None:
    with op.batch_alter_table("outcomes") as batch_op:
        batch_op.drop_constraint(OLD, type_="unique")
        batch_op.create_unique_constraint(NEW, ["order_id", "kind", "rule", "subject", "at"])


def downgrade() -> None:
    with op.batch_alter_table("outcomes") as batch_op:
        batch_op.drop_constraint(NEW, type_="unique")
        batch_op.create_unique_constraint(OLD, ["order_id", "rule", "subject", "at"])
