"""The storage ports the service layer depends on; `memory` and `sql` implement them alike."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Literal, Protocol, Self

from models.events import Event
from models.order import OrderState
from models.outcomes import LedgerEntry, Outcome, Recorded
from models.rules import Obligation

DeadlineState = Literal["pending", "enqueued", "met", "fired"]


@dataclass(frozen=True)
class DueDeadline:
    """A pending clock whose time has come: fire it and re-judge its order."""

    order_id: str
    rule: str
    subject: str
    due_at: datetime


def deadline_state(obligation: Obligation, now: datetime) -> DeadlineState:
    """Open clocks stay pending; a met one is closed as met; a passed one has fired."""
    if obligation.is_open_at(now):
        return "pending"
    return "fired" if obligation.breached else "met"


class Inbox(Protocol):
    def digest_of(self, event_id: str) -> str | None: ...
    def add(self, event: Event, digest: str, received_at: datetime) -> None: ...


class Orders(Protocol):
    def lock(self, order_id: str) -> OrderState:
        """The order's state, locked for this transaction (an empty state if it is new), so
        concurrent handlers of one order take turns. Take it before reading anything else."""
        ...

    def save(self, state: OrderState) -> None: ...


class Outcomes(Protocol):
    def for_order(self, order_id: str) -> list[Recorded]: ...
    def record(self, outcome: Outcome) -> None: ...
    def withdraw(self, recorded: Recorded, retraction: Outcome) -> None: ...
    def any_violation_between(
        self, merchant_id: str, category: str, since: datetime, until: datetime
    ) -> bool:
        """Whether the merchant has a standing violation of `category` with since <= at < until."""
        ...


class Deadlines(Protocol):
    def sync(self, order_id: str, current: Sequence[Obligation], now: datetime) -> None: ...
    def is_due(self, deadline: DueDeadline) -> bool: ...
    def due(self, until: datetime, limit: int) -> list[DueDeadline]: ...


class Ledger(Protocol):
    def add(self, entry: LedgerEntry) -> None: ...
    def totals(self) -> dict[str, int]: ...


class UnitOfWork(Protocol):
    """One transaction: state, inbox row, deadlines and outcomes commit together or not at all."""

    @property
    def inbox(self) -> Inbox: ...
    @property
    def orders(self) -> Orders: ...
    @property
    def outcomes(self) -> Outcomes: ...
    @property
    def deadlines(self) -> Deadlines: ...
    @property
    def ledger(self) -> Ledger: ...

    def __enter__(self) -> Self: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...
    def commit(self) -> None: ...
    def rollback(self) -> None: ...
    def savepoint(self) -> AbstractContextManager[None]:
        """A nested transaction: an exception inside undoes only its writes, then propagates.
        Batches use one per message so a poison message cannot sink the others."""
        ...
