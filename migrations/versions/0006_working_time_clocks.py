"""Working-time clocks: platform-declared closures, and each deadline's calendar and pauses.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "closures",
        sa.Column("closure_id", sa.String(length=128), nullable=False),
        sa.Column("starts_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ends_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("calendars", JSON, nullable=False),
        sa.Column("reason", sa.String(length=256), nullable=False),
        sa.Column("declared_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("declared_by", sa.String(length=128), nullable=False),
        sa.PrimaryKeyConstraint("closure_id", name=op.f("pk_closures")),
    )
    with op.batch_alter_table("deadlines") as batch:
        batch.add_column(sa.Column("calendar", sa.Text(), nullable=True))
        batch.add_column(sa.Column("paused", JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("deadlines") as batch:
        batch.drop_column("paused")
        batch.drop_column("calendar")
    op.drop_table("closures")
