"""The SQL schema (SQLAlchemy 2.x). Alembic owns changes to it: see migrations/.

Constraints carry the rules' guarantees, so a redelivered task or a racing worker cannot record
an outcome twice even if code were wrong: unique event ids, one row per clock, one outcome per
key, at most one standing violation per order and category, one ledger entry per outcome.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "pk": "pk_%(table_name)s",
}


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware in, timezone-aware UTC out, on SQLite (no tz support) and PostgreSQL."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store; all times must be aware")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


Json = JSON().with_variant(JSONB(), "postgresql")
Key = BigInteger().with_variant(Integer(), "sqlite")  # SQLite autoincrements INTEGER only
Name = String(128)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class OrderRow(Base):
    __tablename__ = "orders"

    order_id: Mapped[str] = mapped_column(Name, primary_key=True)
    merchant_id: Mapped[str | None] = mapped_column(Name, index=True)
    created_at: Mapped[datetime | None] = mapped_column(UtcDateTime, index=True)
    state: Mapped[dict[str, Any]] = mapped_column(Json)
    updated_at: Mapped[datetime] = mapped_column(
        UtcDateTime, server_default=func.now(), onupdate=func.now()
    )


class InboxRow(Base):
    """Every event processed, once: the idempotency record and the audit log of what we knew."""

    __tablename__ = "inbox"

    event_id: Mapped[str] = mapped_column(Name, primary_key=True)
    order_id: Mapped[str] = mapped_column(Name, index=True)
    type: Mapped[str] = mapped_column(String(64))
    occurred_at: Mapped[datetime] = mapped_column(UtcDateTime)
    received_at: Mapped[datetime] = mapped_column(UtcDateTime)
    digest: Mapped[str] = mapped_column(String(64))
    body: Mapped[dict[str, Any]] = mapped_column(Json)


class DeadlineRow(Base):
    """One row per clock: the durable source of truth for when an order must be re-judged."""

    __tablename__ = "deadlines"
    __table_args__ = (
        UniqueConstraint("order_id", "rule", "subject"),
        Index(
            "ix_deadlines_due_pending",
            "due_at",
            postgresql_where=text("state = 'pending'"),
            sqlite_where=text("state = 'pending'"),
        ),
        Index(
            "ix_deadlines_due_enqueued",
            "due_at",
            postgresql_where=text("state = 'enqueued'"),
            sqlite_where=text("state = 'enqueued'"),
        ),
        Index(
            "ix_deadlines_merchant_open",
            "merchant_id",
            "due_at",
            postgresql_where=text("state IN ('pending', 'enqueued')"),
            sqlite_where=text("state IN ('pending', 'enqueued')"),
        ),
    )

    id: Mapped[int] = mapped_column(Key, primary_key=True, autoincrement=True)
    order_id: Mapped[str] = mapped_column(Name)
    merchant_id: Mapped[str | None] = mapped_column(Name)
    """The order's merchant (copied: grading reads a merchant's open clocks by it)."""
    rule: Mapped[str] = mapped_column(String(64))
    subject: Mapped[str] = mapped_column(Name, default="")
    due_at: Mapped[datetime] = mapped_column(UtcDateTime)
    state: Mapped[str] = mapped_column(String(16))
    """pending -> enqueued (a timer holds it) -> fired | met; only the dispatcher enqueues."""
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)
    enqueued_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    calendar: Mapped[str | None] = mapped_column(Text)
    """A working-time clock's calendar in force when it was last computed."""
    paused: Mapped[list[list[str]] | None] = mapped_column(Json)
    """Stretches [start, end] (ISO 8601, UTC) a declared closure paused the clock for."""


class OutcomeRow(Base):
    """Warnings, violations and escalations. Withdrawn ones stay, flagged: nothing is deleted."""

    __tablename__ = "outcomes"
    __table_args__ = (
        UniqueConstraint("order_id", "kind", "rule", "subject", "at"),
        Index(
            "uq_outcomes_one_standing_violation",
            "order_id",
            "category",
            unique=True,
            postgresql_where=text("kind = 'violation' AND NOT retracted"),
            sqlite_where=text("kind = 'violation' AND NOT retracted"),
        ),
        Index("ix_outcomes_merchant_category_at", "merchant_id", "category", "at"),
    )

    id: Mapped[int] = mapped_column(Key, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(16))
    order_id: Mapped[str] = mapped_column(Name)
    merchant_id: Mapped[str | None] = mapped_column(Name)
    rule: Mapped[str] = mapped_column(String(64))
    subject: Mapped[str] = mapped_column(Name, default="")
    category: Mapped[str | None] = mapped_column(String(32))
    clause: Mapped[str] = mapped_column(String(32))
    at: Mapped[datetime] = mapped_column(UtcDateTime)
    severity: Mapped[str | None] = mapped_column(String(16))
    points: Mapped[int | None] = mapped_column(Integer)
    retracted: Mapped[bool] = mapped_column(Boolean, default=False)
    recorded_at: Mapped[datetime] = mapped_column(UtcDateTime, server_default=func.now())


class RetractionRow(Base):
    __tablename__ = "retractions"

    id: Mapped[int] = mapped_column(Key, primary_key=True, autoincrement=True)
    outcome_id: Mapped[int] = mapped_column(Key, unique=True)
    order_id: Mapped[str] = mapped_column(Name, index=True)
    rule: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(UtcDateTime)
    evidence: Mapped[str] = mapped_column(String(512))


class LedgerRow(Base):
    """The merchant points ledger: a charge per violation and a reversal per withdrawal."""

    __tablename__ = "points_ledger"
    __table_args__ = (
        UniqueConstraint("order_id", "rule", "subject", "outcome_at", "entry"),
        # the rolling standing window: a merchant's entries over a span of time
        Index("ix_points_ledger_merchant_outcome_at", "merchant_id", "outcome_at"),
    )

    id: Mapped[int] = mapped_column(Key, primary_key=True, autoincrement=True)
    merchant_id: Mapped[str] = mapped_column(Name)
    order_id: Mapped[str] = mapped_column(Name)
    rule: Mapped[str] = mapped_column(String(64))
    subject: Mapped[str] = mapped_column(Name, default="")
    outcome_at: Mapped[datetime] = mapped_column(UtcDateTime)
    entry: Mapped[str] = mapped_column(String(16))
    points: Mapped[int] = mapped_column(Integer)
    at: Mapped[datetime] = mapped_column(UtcDateTime)


class DeadLetterRow(Base):
    """A message the ingest consumer could not accept, kept whole with the reason.

    Written in the same transaction as the good messages of its batch, so acknowledging the
    batch never loses a bad message. `slatimer dlq list` / `dlq replay` read and re-drive them.
    """

    __tablename__ = "dead_letters"

    id: Mapped[int] = mapped_column(Key, primary_key=True, autoincrement=True)
    received_at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    source: Mapped[str] = mapped_column(String(128))
    field: Mapped[str] = mapped_column(String(256))
    reason: Mapped[str] = mapped_column(String(1024))
    content_type: Mapped[str | None] = mapped_column(String(128))
    body: Mapped[bytes] = mapped_column(LargeBinary)
    replayed_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class MerchantRow(Base):
    """A merchant's webhook endpoint and signing secret (never logged), and its API key hash."""

    __tablename__ = "merchants"

    merchant_id: Mapped[str] = mapped_column(Name, primary_key=True)
    webhook_url: Mapped[str | None] = mapped_column(String(2048))
    secret: Mapped[str | None] = mapped_column(String(256))
    previous_secret: Mapped[str | None] = mapped_column(String(256))
    """Still signed with for a while after a rotation, so receivers can switch over."""
    secret_rotated_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    disabled_reason: Mapped[str | None] = mapped_column(String(512))
    api_key_hash: Mapped[str | None] = mapped_column(String(128), unique=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, server_default=func.now())


class AlertRow(Base):
    """The transactional outbox: one alert per outcome, written with the outcome itself.

    `alert_id` is the Standard Webhooks `webhook-id`: derived from the outcome, so the same
    alert always carries the same id, however often it is delivered.
    """

    __tablename__ = "alerts"
    __table_args__ = (
        Index(
            "ix_alerts_due",
            "next_attempt_at",
            "id",
            postgresql_where=text("state = 'pending'"),
            sqlite_where=text("state = 'pending'"),
        ),
        Index(
            "ix_alerts_pending_order",
            "order_id",
            "id",
            postgresql_where=text("state = 'pending'"),
            sqlite_where=text("state = 'pending'"),
        ),
    )

    id: Mapped[int] = mapped_column(Key, primary_key=True, autoincrement=True)
    alert_id: Mapped[str] = mapped_column(String(64), unique=True)
    merchant_id: Mapped[str] = mapped_column(Name, index=True)
    order_id: Mapped[str] = mapped_column(Name)
    kind: Mapped[str] = mapped_column(String(16))
    rule: Mapped[str] = mapped_column(String(64))
    body: Mapped[dict[str, Any]] = mapped_column(Json)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    state: Mapped[str] = mapped_column(String(16), default="pending")
    """pending -> delivered | failed (parked after the last attempt) | disabled (endpoint gone)."""
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UtcDateTime)
    last_status: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(String(512))
    delivered_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class AnnouncementRow(Base):
    """Special periods the platform announced (2.1.3); the latest version of each id."""

    __tablename__ = "announcements"

    announcement_id: Mapped[str] = mapped_column(Name, primary_key=True)
    published_at: Mapped[datetime] = mapped_column(UtcDateTime)
    applies_from: Mapped[datetime] = mapped_column(UtcDateTime)
    applies_until: Mapped[datetime] = mapped_column(UtcDateTime)
    ship_within_hours: Mapped[float] = mapped_column(Float)


class ClosureRow(Base):
    """Platform-declared closures: working-time clocks pause for them."""

    __tablename__ = "closures"

    closure_id: Mapped[str] = mapped_column(Name, primary_key=True)
    starts_at: Mapped[datetime] = mapped_column(UtcDateTime)
    ends_at: Mapped[datetime] = mapped_column(UtcDateTime)
    calendars: Mapped[list[str]] = mapped_column(Json)
    reason: Mapped[str] = mapped_column(String(256))
    declared_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    declared_by: Mapped[str] = mapped_column(Name)
