"""The alert relay's query gets one index per half, so its plan no longer hinges on statistics.

The relay takes the oldest due pending alerts (`ix_alerts_due`, now ordered by
`(next_attempt_at, id)`, the query's own ORDER BY, so the LIMIT stops the scan) and skips any
whose order has an earlier pending alert (`ix_alerts_pending_order`, `(order_id, id)` over
pending rows only, in place of the all-rows `order_id` index that served nothing else). Before,
a table that had grown since its last ANALYZE (a sales-day wave adds tens of thousands of
pending alerts in seconds) was hash-anti-joined or sorted whole on every claim, 27-55 ms at a
20,000 backlog; with these indexes and the claim's planner settings (store/sql/outbox.py) ~2 ms.

The indexes are built in the migration's transaction, not CONCURRENTLY: the build holds off
new alert rows (and so the outcome transactions that write them) while it scans the table;
docs/runtime.md says when to upgrade.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

PENDING = sa.text("state = 'pending'")


def upgrade() -> None:
    op.drop_index("ix_alerts_due", table_name="alerts")
    _pending_index("ix_alerts_due", ["next_attempt_at", "id"])
    op.drop_index("ix_alerts_order_id", table_name="alerts")
    _pending_index("ix_alerts_pending_order", ["order_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_alerts_pending_order", table_name="alerts")
    op.create_index("ix_alerts_order_id", "alerts", ["order_id"])
    op.drop_index("ix_alerts_due", table_name="alerts")
    _pending_index("ix_alerts_due", ["next_attempt_at"])


def _pending_index(name: str, columns: list[str]) -> None:
    op.create_index(name, "alerts", columns, postgresql_where=PENDING, sqlite_where=PENDING)
