"""Special periods (2.1.3): the announcements table, and orders found by creation time.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "announcements",
        sa.Column("announcement_id", sa.String(length=128), nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("applies_from", sa.DateTime(timezone=True), nullable=False),
        sa.Column("applies_until", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ship_within_hours", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("announcement_id", name=op.f("pk_announcements")),
    )
    op.create_index(op.f("ix_orders_created_at"), "orders", ["created_at"])


def downgrade() -> None:
    op.drop_index(op.f("ix_orders_created_at"), table_name="orders")
    op.drop_table("announcements")
