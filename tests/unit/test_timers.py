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
    lane_of,
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


def _wave(count: int, merchants: int) -> list[DueDeadline]:
    """`count` clocks due within 100 ms, order n of merchant n mod `merchants`."""
    return [
        DueDeadline(
            f"o{n}", "collection_overdue", "", T0 + n * (100 * MS) / count, f"m{n % merchants}"
        )
        for n in range(count)
    ]


def test_a_wave_is_laid_out_in_lanes_that_never_share_a_merchant() -> None:
    # Given a window of 5,000 clocks of 1,000 merchants (five each)
    deadlines = _wave(5000, 1000)
    # When grouped with 8 lanes of at most 200
    groups = group_for_eta(deadlines, window=250 * MS, size=200, lanes=8)
    # Then every clock is in exactly one group, none over the size or the window
    assert sorted(d.order_id for g in groups for d in g) == sorted(d.order_id for d in deadlines)
    assert all(len(g) <= 200 and g[-1].due_at - g[0].due_at <= 250 * MS for g in groups)
    # and a merchant's clocks are all in one lane: groups of different lanes share no merchant
    lane_of_merchant: dict[str | None, set[int]] = {}
    for g in groups:
        for d in g:
            lane_of_merchant.setdefault(d.merchant_id, set()).add(lane_of(d, 8))
    assert all(len(lanes) == 1 for lanes in lane_of_merchant.values())
    assert len({lane_of(g[0], 8) for g in groups}) == 8
    # and the groups come in the order their tasks run (by their last due time)
    assert [g[-1].due_at for g in groups] == sorted(g[-1].due_at for g in groups)


def test_a_window_within_the_size_stays_one_group_whatever_the_lanes() -> None:
    deadlines = _wave(150, 1000)  # a steady second's window: fewer than one group holds
    assert group_for_eta(deadlines, 250 * MS, 200, lanes=8) == [deadlines]


def test_a_clocks_merchant_is_not_part_of_its_identity() -> None:
    # the merchant is not part of a clock's identity: a task's decoded refs equal the claim's
    claimed = DueDeadline("o1", "collection_overdue", "", T0, "m1")
    assert decode_refs(encode_refs([claimed])) == [claimed]
    assert decode_refs(encode_refs([claimed]))[0].merchant_id is None


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


def test_the_sql_store_claims_clocks_with_their_merchant(
    sqlite_engine: Any, policy: Policy
) -> None:
    # Given two orders of two merchants on the SQL store
    from tests.conftest import sql_uow

    uow = sql_uow(sqlite_engine)
    with uow:
        record_event(created("o1", T0, merchant="m-a"), uow, T0, policy)
        record_event(created("o2", T0, merchant="m-b"), uow, T0, policy)
        uow.commit()
    # When the dispatcher claims their collection clocks
    sent: list[DueDeadline] = []
    dispatch_once(sql_uow(sqlite_engine), T0 + 120 * H, TIMERS, lambda g, _eta: sent.extend(g))
    # Then each comes with its merchant, which lays a wave's groups out in lanes
    by_order = {d.order_id: d.merchant_id for d in sent if d.rule == COLLECTION_OVERDUE.id}
    assert by_order == {"o1": "m-a", "o2": "m-b"}
