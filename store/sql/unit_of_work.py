"""The SQL unit of work (SQLite by default, PostgreSQL in production), SQLAlchemy 2.x style.

One `with uow:` block is one transaction. Reading an order locks its row (`FOR UPDATE` on
PostgreSQL), so two workers judging the same order take turns instead of losing an update.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from types import TracebackType
from typing import Self

from sqlalchemy.orm import Session, sessionmaker

from store.sql.batch import BatchedUnitOfWork
from store.sql.repositories import SqlRepositories


class SqlUnitOfWork(SqlRepositories):
    """One transaction: the repositories over a session opened by `with uow:` (each block a
    session of its own), and `batch()` for the set-based unit of work over the same ones."""

    def __init__(self, session_factory: sessionmaker[Session]) -> None:
        self.session_factory = session_factory

    def __enter__(self) -> Self:
        super().__init__(self.session_factory())
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.rollback()
        self.session.close()

    def commit(self) -> None:
        self.session.commit()

    def rollback(self) -> None:
        self.session.rollback()

    @contextmanager
    def savepoint(self) -> Iterator[None]:
        with self.session.begin_nested():
            yield

    @contextmanager
    def batch(
        self,
        order_ids: Sequence[str],
        event_ids: Sequence[str] = (),
        moments: Sequence[datetime] = (),
        merchants_of: Sequence[str] = (),
    ) -> Iterator[BatchedUnitOfWork]:
        """store/sql/batch.py: set-based reads and writes for a batch, in one savepoint."""
        with self.session.begin_nested():
            batched = BatchedUnitOfWork(self, order_ids, event_ids, moments, merchants_of)
            yield batched
            batched.finish()
