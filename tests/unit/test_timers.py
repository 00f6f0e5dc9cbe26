"""Durable timers on the in-memory store: grouping, claiming, re-arming, early arrivals."""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from models.clock import VirtualClock
from models.policy import Policy
from models.rules import COLLECTION_OVERDUE, Obligation
from store.base import DueDeadline
from store.memory import MemoryUnitOfWork
from tests.builders import T0, H, collected, created
from tests.conftest import without_warnings
from worker.process.backoff import compute_backoff
from worker.service.handlers import record_event
from worker.timers.firing import (
    TimerPolicy,
    decode_refs,
    dispatch_once,
    encode_refs,
    fire_due,
    group_for_eta,
)

MS = timedelta(milliseconds=1)
TIMERS = TimerPolicy(horizon=timedelta(minutes=5), batch=100, redispatch_grace=timedelta(minutes=5))


def _deadline(offset: timedelta, order: str = "o") -> DueDeadline:
    return DueDeadline(order, "collection_overdue", "", T0 + offset)


def test_groups_never_span_more_than_the_window_nor_exceed_the_size() -> None:
    deadlines = [_deadline(n * 100 * MS, f"o{n}") for n in range(10)]  # one every 100 ms
    groups = group_for_eta(deadlines, window=250 * MS, size=2)
    assert [len(g) for g in groups] == [2, 2, 2, 2, 2]
    groups = group_for_eta(deadlines, window=250 * MS, size=200)
    assert [len(g) for g in groups] == [3, 3, 3, 1]
    assert all(g[-1].due_at - g[0].due_at <= 250 * MS for g in groups)


def test_task_refs_round_trip_through_json_safe_lists() -> None:
    deadline = DueDeadline("o1", "cancellation_review_overdue", "c-9", T0 + 3 * MS)
    assert decode_refs(encode_refs([deadline])) == [deadline]


def _store_with_orders(policy: Policy, count: int) -> MemoryUnitOfWork:
    policy = without_warnings(policy)
    uow = MemoryUnitOfWork()
    for number in range(count):
        record_event(created(f"o{number}", T0 + number * H), uow, T0, policy)
    uow.commit()
    return uow


def test_dispatch_claims_only_what_falls_due_within_the_horizon(policy: Policy) -> None:
    uow = _store_with_orders(policy, 3)  # due at 120 h, 121 h, 122 h
    sent: list[tuple[list[DueDeadline], datetime]] = []
    now = T0 + 120 * H - timedelta(minutes=1)
    assert dispatch_once(uow, now, TIMERS, lambda group, eta: sent.append((group, eta))) == 1
    assert [(g[0].order_id, eta) for g, eta in sent] == [("o0", T0 + 120 * H)]
    assert dispatch_once(uow, now, TIMERS, lambda group, eta: sent.append((group, eta))) == 0


def test_a_lost_timer_is_sent_again_after_the_grace(policy: Policy) -> None:
    uow = _store_with_orders(policy, 1)
    sent: list[list[DueDeadline]] = []
    due = T0 + 120 * H
    dispatch_once(uow, due - timedelta(minutes=1), TIMERS, lambda g, _eta: sent.append(g))
    # the worker holding the task dies; nothing fires
    dispatch_once(uow, due + timedelta(minutes=4), TIMERS, lambda g, _eta: sent.append(g))
    assert len(sent) == 1
    dispatch_once(uow, due + timedelta(minutes=6), TIMERS, lambda g, _eta: sent.append(g))
    assert len(sent) == 2 and sent[1][0].due_at == due


def test_firing_records_the_violation_once_even_if_the_task_runs_twice(policy: Policy) -> None:
    uow = _store_with_orders(policy, 1)
    clock = VirtualClock(T0 + 120 * H + 5 * MS)
    [deadline] = uow.deadlines.due(T0 + 200 * H, 10)
    assert fire_due([deadline], lambda: uow, clock, without_warnings(policy)) == (1, [])
    fire_due([deadline], lambda: uow, clock, without_warnings(policy))
    assert [o.rule for o in uow.outcomes.log] == ["collection_overdue"]


def test_a_task_that_arrives_early_is_handed_back_not_fired(policy: Policy) -> None:
    uow = _store_with_orders(policy, 1)
    [deadline] = uow.deadlines.due(T0 + 200 * H, 10)
    early_clock = VirtualClock(deadline.due_at - 20 * MS)
    assert fire_due([deadline], lambda: uow, early_clock, without_warnings(policy)) == (
        0,
        [deadline],
    )
    assert uow.outcomes.log == []


def test_a_met_obligation_closes_its_timer_in_the_same_transaction(policy: Policy) -> None:
    uow = _store_with_orders(policy, 1)
    [deadline] = uow.deadlines.due(T0 + 200 * H, 10)
    record_event(collected("o0", T0 + 50 * H), uow, T0 + 50 * H, without_warnings(policy))
    uow.commit()
    assert not uow.deadlines.is_due(deadline)
    assert fire_due(
        [deadline], lambda: uow, VirtualClock(deadline.due_at), without_warnings(policy)
    ) == (1, [])
    assert uow.outcomes.log == []


def test_backoff_grows_exponentially_with_full_jitter_and_a_cap() -> None:
    rng = random.Random(7)
    waits = [compute_backoff(n, base=0.5, cap=30, jitter=rng) for n in range(1, 12)]
    ceilings = [min(30, 0.5 * 2 ** (n - 1)) for n in range(1, 12)]
    assert all(c / 2 <= w <= c for w, c in zip(waits, ceilings, strict=True))
    assert max(waits) <= 30


def test_an_overdue_deadline_just_sent_is_not_sent_again_before_the_grace(policy: Policy) -> None:
    # Given a deadline that fell due an hour ago, during an outage
    uow = _store_with_orders(policy, 1)
    due = T0 + 120 * H
    sent: list[list[DueDeadline]] = []
    dispatch_once(uow, due + H, TIMERS, lambda g, _eta: sent.append(g))
    # When the dispatcher passes again a minute later, its task still in flight
    dispatch_once(uow, due + H + timedelta(minutes=1), TIMERS, lambda g, _eta: sent.append(g))
    # Then it was sent once; only after the grace since sending is it re-armed
    assert len(sent) == 1
    dispatch_once(uow, due + H + timedelta(minutes=6), TIMERS, lambda g, _eta: sent.append(g))
    assert len(sent) == 2


def test_a_clock_whose_obligation_vanished_is_closed_not_left_due(
    policy: Policy, sqlite_engine: Any
) -> None:
    """Late evidence that the order was collected when the cancellation was requested: 2.3.2
    starts no clock after all, so its row (and warning) must close instead of staying due for
    ever (found by the fault suite's state machine)."""
    from tests.builders import cancel_requested
    from tests.conftest import sql_uow

    events = [
        (created("o0", T0), T0),
        (cancel_requested("o0", T0 + H), T0 + H),
        (collected("o0", T0 + H), T0 + 6 * H),
    ]
    for uow in (MemoryUnitOfWork(), sql_uow(sqlite_engine)):
        for event, now in events:
            with uow:
                record_event(event, uow, now, policy)
                uow.commit()
        with uow:
            assert uow.deadlines.due(T0 + 60 * H, 10) == []


def _clock(due_at: datetime) -> Obligation:
    return Obligation(COLLECTION_OVERDUE, "", due_at, None, None, "2.1.1", T0)


def test_clocks_come_due_in_instant_order_to_the_microsecond_whatever_their_time_zone() -> None:
    # Given three open clocks: one a microsecond after another, one given in Hong Kong time
    deadlines = MemoryUnitOfWork().deadlines
    first = T0 + 10 * H
    hong_kong = (first + MS).astimezone(ZoneInfo("Asia/Hong_Kong"))
    deadlines.sync("b", [_clock(first + timedelta(microseconds=1))], T0)
    deadlines.sync("c", [_clock(hong_kong)], T0)
    deadlines.sync("a", [_clock(first)], T0)
    # When the store is asked what is due by each moment
    due_by_first = deadlines.due(first, 10)
    due_by_all = deadlines.due(hong_kong, 10)
    # Then the heap orders them by instant (not by the wall time shown), to the microsecond
    assert [d.order_id for d in due_by_first] == ["a"]
    assert [(d.order_id, d.due_at) for d in due_by_all] == [
        ("a", first),
        ("b", first + timedelta(microseconds=1)),
        ("c", hong_kong),
    ]
