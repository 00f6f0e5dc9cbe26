"""A finding of the fault suite, fixed: a violation's severity (Chapter III's repeat window) and
the standing thresholds are judged against the merchant's violations already recorded, so
clocks of one merchant that fire out of due order — two worker processes, or every overdue
clock at once after an outage — were graded differently from `slatimer replay`, which fires
them in due order. Now grading a violation first fires the merchant's earlier overdue clocks,
each as of its due time (`worker.service.handlers._catch_up`): the record is written in due order.

On the memory store, SQLite one by one and SQLite set-based (store/sql/batch.py); PostgreSQL,
with concurrent transactions, in tests/integration/test_firing_order_pg.py."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import Engine

from models.policy import Policy
from store.base import UnitOfWork
from store.memory import MemoryUnitOfWork
from tests.builders import T0, H, created, event, shipped
from tests.conftest import sql_uow
from tests.firing_order import after_outage, ingest, recorded, replayed

STORES = ["memory", "sqlite", "sqlite-set-based"]


@pytest.fixture(params=STORES)
def store(request: pytest.FixtureRequest) -> Iterator[tuple[UnitOfWork, bool]]:
    """(a unit of work to reuse for every transaction, whether timers fire set-based)."""
    if request.param == "memory":
        yield MemoryUnitOfWork(), False
        return
    engine: Engine = request.getfixturevalue("sqlite_engine")
    yield sql_uow(engine), request.param.endswith("set-based")


@pytest.fixture()
def rules(shipped_policy: Policy) -> Policy:
    """The rules as shipped: the standing thresholds (12, 24, 48 points) and 3.3's trace
    checks on."""
    return shipped_policy


@pytest.mark.parametrize("one_task_each", [False, True], ids=["one-group", "one-task-each"])
def test_chapter_iii_clocks_of_one_merchant_fired_latest_first_are_graded_as_replay(
    store: tuple[UnitOfWork, bool], rules: Policy, one_task_each: bool
) -> None:
    # Given three orders of one merchant created an hour apart and never collected: replay
    # makes the first a general 2.1.1 violation (4 points), the next two repeats within 30
    # days (serious, 8 each), and the second carries the merchant past 12 points
    uow, set_based = store
    events = [created(f"o{n}", T0 + n * H, "m-1") for n in range(3)]
    back = T0 + 200 * H
    # When the runtime is down while all three fall due and, back, fires the latest first
    got = after_outage(uow, events, rules, back, set_based, one_task_each)
    # Then each is graded as replay grades it, and the threshold is crossed once, by o1
    assert got == replayed(events, rules, back)
    assert sorted((line[0], line[5], line[6]) for line in got if line[1] == "violation") == [
        ("o0", "general", 4),
        ("o1", "serious", 8),
        ("o2", "serious", 8),
    ]
    assert [(line[0], line[3]) for line in got if line[1] == "escalation"] == [("o1", "warning")]
    with uow:
        assert uow.ledger.totals() == {"m-1": 20}


def test_3_3_4_violation_recorded_by_an_event_waits_for_the_merchants_overdue_3_3_1_clock(
    store: tuple[UnitOfWork, bool], rules: Policy
) -> None:
    # Given two orders of one merchant: x shipped at 1 h and never traced (3.3(1) due at 25 h),
    # y shipped at 20 h and traced at 30 h to another postcode (3.3(4) at once, at 30 h);
    # replay makes x's false delivery general (12) and y's a repeat (serious, 25)
    uow, _ = store
    trace = {"carrier": "JD_LOGISTICS", "status": "in_transit", "destination_postcode": "518000"}
    events = [
        created("x", T0),
        created("y", T0),
        shipped("x", T0 + H),
        shipped("y", T0 + 20 * H),
        event("logistics.tracked", "y", T0 + 30 * H, waybill_no="JD0001", **trace),
    ]
    expected = replayed(events, rules, T0 + 30 * H)
    # When x's clock has not fired yet (a busy worker) as y's trace is handled at 30 h
    ingest(uow, events, rules)
    # Then x's breach is recorded first, as of 25 h, and y's is graded as a repeat
    got = recorded(uow, ["x", "y"])
    assert got == expected
    assert sorted((line[0], line[2], line[3], line[5], line[6]) for line in got) == [
        ("x", "false_delivery", "3.3(1)", "general", 12),
        ("x", "standing_threshold", "warning", None, None),
        ("y", "false_delivery", "3.3(4)", "serious", 25),
        ("y", "standing_threshold", "unshelve_commodities", None, None),
    ]


@pytest.mark.parametrize("one_task_each", [False, True], ids=["one-group", "one-task-each"])
def test_chapter_iii_threshold_reached_out_of_order_is_crossed_where_replay_crosses_it(
    store: tuple[UnitOfWork, bool], rules: Policy, one_task_each: bool
) -> None:
    # Given a merchant with 8 points (c refused to ship, 2.1.4), a's collection due at 120 h
    # (4 points) and b shipped at 100 h with no trace (3.3(1) due at 124 h, 12 points):
    # replay crosses 12 with a's violation and 24 with b's
    uow, set_based = store
    events = [
        created("a", T0),
        created("b", T0),
        created("c", T0),
        event("merchant.refused_shipment", "c", T0 + H, reason="refused"),
        shipped("b", T0 + 100 * H),
        event("order.collected", "b", T0 + 101 * H, waybill_no="JD0001", carrier="JD_LOGISTICS"),
    ]
    back = T0 + 130 * H
    # When both clocks are overdue at 130 h and b's fires first
    got = after_outage(uow, events, rules, back, set_based, one_task_each)
    # Then the 12-point measure is a's, the 24-point one b's, each once
    assert got == replayed(events, rules, back)
    crossings = sorted((line[0], line[3]) for line in got if line[2] == "standing_threshold")
    assert crossings == [("a", "warning"), ("b", "unshelve_commodities")]


def test_a_caught_up_clock_fires_once(store: tuple[UnitOfWork, bool], rules: Policy) -> None:
    # Given two overdue collection clocks of one merchant
    uow, set_based = store
    events = [created("o0", T0), created("o1", T0 + H)]
    back = T0 + timedelta(hours=130)
    # When the later fires first (catching the earlier up), then the earlier's own task runs
    got = after_outage(uow, events, rules, back, set_based, one_task_each=True)
    # Then the earlier one's task finds it fired: one violation each, no clock left due
    assert got == replayed(events, rules, back)
    with uow:
        assert uow.deadlines.open_of_merchant("m-1", ["collection_overdue"], back) == []
