"""Helpers for the firing-order tests (tests/faults/test_firing_order.py on memory and SQLite,
tests/integration/test_firing_order_pg.py on PostgreSQL): run the runtime's handlers with
clocks fired out of due order and read back what it recorded, in replay's terms."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime

from models.clock import VirtualClock
from models.events import Event
from models.outcomes import iso
from models.policy import Policy
from store.base import DueDeadline, UnitOfWork
from tests.conftest import run
from worker.service.handlers import record_event
from worker.timers.firing import fire_due

Line = tuple[str, str, str, str, str, str | None, int | None]
"""(order, kind, rule, subject, at, severity, points) of a standing violation or escalation."""
UowFactory = Callable[[], UnitOfWork]


def replayed(events: list[Event], policy: Policy, until: datetime) -> set[Line]:
    """What `slatimer replay` makes of the events: standing violations and escalations."""
    return {
        (
            o["order_id"],
            o["kind"],
            o["rule"],
            o["subject"] or "",
            o["at"],
            o["severity"],
            o["points"],
        )
        for o in run(events, policy, until)
        if o["kind"] in ("violation", "escalation")
    }


def recorded(uow: UnitOfWork, order_ids: Sequence[str]) -> set[Line]:
    """What the runtime's store holds for these orders, in the same terms."""
    with uow:
        return {
            (order_id, r.kind, r.rule, r.subject, iso(r.at), r.severity, r.points)
            for order_id in order_ids
            for r in uow.outcomes.for_order(order_id)
            if r.kind != "warning" and not r.retracted
        }


def ingest(uow: UnitOfWork, events: list[Event], policy: Policy) -> None:
    """Each event handled when it happened, in its own transaction (no clock fires)."""
    for event in events:
        with uow:
            record_event(event, uow, event.occurred_at, policy)
            uow.commit()


def due_by(uow: UnitOfWork, until: datetime) -> list[DueDeadline]:
    with uow:
        return uow.deadlines.due(until, 1000)


def fire_latest_first(
    factory: UowFactory, now: datetime, policy: Policy, set_based: bool, one_task_each: bool
) -> None:
    """The runtime back from an outage at `now`: every overdue clock fires, the latest first,
    in one check task (a group) or one task each; set-based or one by one."""
    latest_first = sorted(due_by(factory(), now), key=lambda d: d.rank, reverse=True)
    groups = [[d] for d in latest_first] if one_task_each else [latest_first]
    for group in groups:
        fire_due(group, factory, VirtualClock(now), policy, set_based=set_based)


def after_outage(
    uow: UnitOfWork,
    events: list[Event],
    policy: Policy,
    back: datetime,
    set_based: bool = False,
    one_task_each: bool = False,
) -> set[Line]:
    """The events handled on time, no clock fired until the runtime is `back`, then every
    overdue clock latest first; what was recorded for the events' orders."""
    ingest(uow, events, policy)
    fire_latest_first(lambda: uow, back, policy, set_based, one_task_each)
    return recorded(uow, sorted({event.order_id for event in events}))
