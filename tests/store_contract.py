"""Checks every store must pass, run against SQLite (unit tier) and PostgreSQL (integration)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, func, select
from sqlalchemy.exc import IntegrityError

from models.events import Event, parse_event
from models.outcomes import Outcome
from models.policy import Policy
from store.base import UnitOfWork
from store.memory import MemoryUnitOfWork
from store.sql.batch import Window, _read_window
from store.sql.tables import Base, InboxRow, LedgerRow, OutcomeRow, RetractionRow
from tests.builders import DAY, T0, H, collected, created, event, stockout
from tests.conftest import run, sql_uow, without_warnings
from worker.service.handlers import fire_deadline, record_event
from worker.service.replay import replay_lines
from worker.timers.firing import group_for_eta

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "day-of-orders.jsonl"


def same_outcomes_as_memory(engine: Engine, policy: Policy) -> None:
    lines = EXAMPLE.read_bytes().splitlines()
    in_memory = replay_lines(lines, policy)
    in_sql = replay_lines(lines, policy, uow=sql_uow(engine))
    assert in_memory.outcomes, "the example log should produce outcomes"
    assert [o.as_json() for o in in_sql.in_order()] == [o.as_json() for o in in_memory.in_order()]
    with sql_uow(engine) as uow:
        assert uow.ledger.totals() == in_memory.points_by_merchant()


MOVED_ORDER = [
    # Given ord-0 created for m-0 with a 168 h limit, its collection late (a violation for m-0),
    # When a second creation dated an hour earlier names m-9: the order moves to m-9, its
    # deadline moves an hour earlier, and m-0's violation is withdrawn for a new one,
    b'{"event_id":"c1","type":"order.created","occurred_at":"2026-11-11T14:21:00Z",'
    b'"order_id":"ord-0","merchant_id":"m-0","items":[{"sku":"s","quantity":2,'
    b'"ship_within_hours":168}],"ship_to":{"country":"CN","postcode":"524604"}}',
    b'{"event_id":"c2","type":"order.collected","occurred_at":"2026-11-19T08:16:05Z",'
    b'"order_id":"ord-0","waybill_no":"JD891047768","carrier":"JD_LOGISTICS"}',
    b'{"event_id":"c3","type":"order.created","occurred_at":"2026-11-11T13:21:00Z",'
    b'"order_id":"ord-0","merchant_id":"m-9","items":[{"sku":"s","quantity":2,'
    b'"ship_within_hours":168}],"ship_to":{"country":"CN","postcode":"524604"}}',
]


def a_violation_withdrawn_after_its_order_moved_leaves_its_first_merchant(
    engine: Engine, policy: Policy
) -> None:
    # Then every store records the same outcomes, and m-0 keeps no standing violation.
    in_memory = replay_lines(MOVED_ORDER, policy)
    in_sql = replay_lines(MOVED_ORDER, policy, uow=sql_uow(engine))
    kinds = [(o.kind, o.merchant_id) for o in in_memory.in_order()]
    assert ("retraction", "m-9") in kinds and ("violation", "m-0") in kinds, kinds
    assert [o.as_json() for o in in_sql.in_order()] == [o.as_json() for o in in_memory.in_order()]
    whole_window = (T0 - 400 * DAY, T0 + 400 * DAY)
    with sql_uow(engine) as uow:
        assert not uow.outcomes.any_violation_between("m-0", "out_of_stock", *whole_window)


def late_evidence_is_kept_not_deleted(engine: Engine, policy: Policy) -> None:
    policy = without_warnings(policy)
    events = [created("o1"), created("o2", at=T0 + 130 * H), collected("o1", T0 + 119 * H)]
    run(events, policy, until=T0 + 300 * H, uow=sql_uow(engine))
    with engine.connect() as connection:
        rows = connection.execute(select(OutcomeRow.order_id, OutcomeRow.retracted)).all()
        assert sorted(rows) == [("o1", True), ("o2", False)]
        assert connection.scalar(select(func.count()).select_from(RetractionRow)) == 1
        ledger = connection.execute(
            select(LedgerRow.order_id, LedgerRow.entry, LedgerRow.points).order_by(LedgerRow.id)
        ).all()
        assert ledger == [("o1", "charge", 4), ("o1", "reversal", -4), ("o2", "charge", 4)]


def a_failed_transaction_leaves_nothing(engine: Engine, policy: Policy) -> None:
    with sql_uow(engine) as uow:
        record_event(created("o1"), uow, T0, policy)
        # no commit: leaving the block rolls back
    with engine.connect() as connection:
        assert connection.scalar(select(func.count()).select_from(InboxRow)) == 0


def the_schema_refuses_a_second_standing_violation(engine: Engine, policy: Policy) -> None:
    policy = without_warnings(policy)
    run([created("o1"), stockout("o1", T0 + H)], policy, T0 + 10 * DAY, uow=sql_uow(engine))
    duplicate = Outcome(
        kind="violation",
        rule="collection_overdue",
        order_id="o1",
        merchant_id="m-1",
        at=T0 + 120 * H,
        clause="2.1.1",
        category="out_of_stock",
        severity="general",
        points=4,
    )
    with sql_uow(engine) as uow, pytest.raises(IntegrityError):
        uow.outcomes.record(duplicate)


def the_schema_refuses_the_same_outcome_twice(engine: Engine, policy: Policy) -> None:
    policy = without_warnings(policy)
    run([created("o1")], policy, T0 + 10 * DAY, uow=sql_uow(engine))
    with sql_uow(engine) as uow:
        [recorded] = uow.outcomes.for_order("o1")
        uow.session.execute(
            OutcomeRow.__table__.update().values(retracted=True)  # free the category slot
        )
        again = Outcome(
            kind="violation",
            rule=recorded.rule,
            order_id="o1",
            merchant_id="m-1",
            at=recorded.at,
            clause=recorded.clause,
            category=recorded.category,
        )
        with pytest.raises(IntegrityError):
            uow.outcomes.record(again)


def times_come_back_aware_in_utc(engine: Engine, policy: Policy) -> None:
    policy = without_warnings(policy)
    run([created("o1")], policy, T0 + 10 * DAY, uow=sql_uow(engine))
    with sql_uow(engine) as uow:
        [recorded] = uow.outcomes.for_order("o1")
        assert recorded.at == T0 + 120 * H
        assert recorded.at.utcoffset() == timedelta(0)


def migrations_match_the_models(engine: Engine, policy: Policy) -> None:
    """Alembic owns the schema: after `upgrade head` there is nothing left to autogenerate."""
    with engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert differences == []


def special_periods_reschedule_stored_orders(engine: Engine, policy: Policy) -> None:
    """2.1.3 through the SQL store: the announcement finds open orders by creation time."""
    policy = without_warnings(policy)
    announcement = event(
        "announcement.published",
        "*",
        T0 + 130 * H,
        announcement_id="double-11",
        applies_from=(T0 - DAY).isoformat(),
        applies_until=(T0 + DAY).isoformat(),
        ship_within_hours=200,
    )
    events = [created("o1"), created("o9", at=T0 + 130 * H), announcement]
    in_sql = run(events, policy, until=T0 + 20 * DAY, uow=sql_uow(engine))
    assert in_sql == run(events, policy, until=T0 + 20 * DAY)
    assert [(o["order_id"], o["kind"]) for o in in_sql][:2] == [
        ("o1", "violation"),
        ("o1", "retraction"),
    ]


def several_cases_of_one_rule_keep_their_own_clocks(engine: Engine, policy: Policy) -> None:
    """Two 3.3 cases and two shortage complaints on one order: one clock each in the deadline
    table (no duplicate slot), one violation per category standing."""
    policy = without_warnings(policy).model_copy(update={"trace_checks": True})
    wrong = {"waybill_no": "12345", "carrier": "JD_LOGISTICS"}
    trace = {**wrong, "status": "in_transit", "destination_postcode": "518000"}
    events = [
        created("o1"),
        event("order.shipped", "o1", T0 + H, **wrong),
        event("logistics.tracked", "o1", T0 + 3 * H, **trace),
        event("complaint.upheld", "o1", T0 + 5 * H, category="shortage", severity="slight"),
        event("complaint.upheld", "o1", T0 + 6 * H, category="wrong_item", severity="serious"),
    ]
    in_sql = run(events, policy, until=T0 + 2 * H + 5 * H, uow=sql_uow(engine))
    assert in_sql == run(events, policy, until=T0 + 7 * H)
    assert [(o["rule"], o["clause"]) for o in in_sql] == [
        ("false_delivery", "3.3(3)"),
        ("shortage", "3.1"),
    ]


def working_time_clocks_keep_their_calendar_and_pauses(engine: Engine, policy: Policy) -> None:
    """A declared closure re-judges the stored open complaint: its deadline row moves and
    records the calendar in force and the paused stretch, as the in-memory store does."""
    filed_at = T0 + 7 * DAY  # Monday 9 March 2026, 17:00 in Hong Kong
    start, end = filed_at + 16 * H, filed_at + 24 * H  # Tuesday 09:00-17:00 HKT
    events = [
        event("ipr.complaint_filed", "ipr:C1", filed_at, complaint_id="C1", merchant_id="m-1"),
        event(
            "calendar.closure_declared",
            "*",
            filed_at + H,
            closure_id="t8",
            starts_at=start.isoformat(),
            ends_at=end.isoformat(),
        ),
    ]
    in_sql = run(events, policy, until=filed_at + 2 * H, uow=sql_uow(engine))
    assert in_sql == run(events, policy, until=filed_at + 2 * H) == []
    with sql_uow(engine) as uow:
        assert [c.closure_id for c in uow.closures.all()] == ["t8"]
        assert uow.deadlines.open_orders({"ipr_response_overdue"}) == ["ipr:C1"]
        views = {view.rule: view for view in uow.deadlines.timeline("ipr:C1")}
    response = views["ipr_response_overdue"]
    assert response.due_at == filed_at + 3 * DAY - 17 * H + 8 * H  # Thu 00:00 HKT + 8 h paused
    assert response.paused == ((start, end),)
    assert response.calendar is not None and "closures t8" in response.calendar
    assert response.state == "pending"


def batches_record_what_one_by_one_does(engine: Engine, policy: Policy) -> None:
    """`uow.batch` (store/sql/batch.py) against the memory store, which handles a batch message
    by message: the example's events in batches of 40, and before each batch the clocks due
    by then, in groups an hour wide (many merchants' violations and escalations per group)."""
    lines = [line for line in EXAMPLE.read_bytes().splitlines() if line.strip()]
    events = sorted((parse_event(line) for line in lines), key=lambda event: event.occurred_at)
    expected = drive_in_batches(events, policy, MemoryUnitOfWork())
    assert any(o.kind == "violation" and o.severity == "serious" for o in expected)
    assert drive_in_batches(events, policy, sql_uow(engine)) == expected


def batches_judge_working_time_clocks_as_one_by_one_does(engine: Engine, policy: Policy) -> None:
    """The working-time example (IPR complaints, an inquiry, a typhoon closure re-judging an
    open complaint, a late return) through `uow.batch`, against the memory store; the batch
    keeps each clock's calendar and paused stretch."""
    path = EXAMPLE.parent / "working-time.jsonl"
    lines = [line for line in path.read_bytes().splitlines() if line.strip()]
    events = sorted((parse_event(line) for line in lines), key=lambda event: event.occurred_at)
    expected = drive_in_batches(events, policy, MemoryUnitOfWork())
    assert {o.rule for o in expected} >= {"ipr_response_overdue", "cs_reply_overdue"}
    assert drive_in_batches(events, policy, sql_uow(engine)) == expected
    with sql_uow(engine) as uow:
        views = {view.rule: view for view in uow.deadlines.timeline("ipr:IPR-2026-0042")}
    review = views["ipr_review_overdue"]
    assert review.calendar is not None and "closures typhoon-2026-02-24" in review.calendar
    assert len(review.paused) == 1


def drive_in_batches(events: list[Event], policy: Policy, uow: UnitOfWork) -> list[Outcome]:
    made: list[Outcome] = []
    for start in range(0, len(events), 40):
        chunk = events[start : start + 40]
        now = chunk[0].occurred_at
        with uow:
            due = uow.deadlines.due(now, 100_000)
        for group in group_for_eta(due, timedelta(hours=1), 200):
            with uow:
                orders, moments = [d.order_id for d in group], [d.due_at for d in group]
                with uow.batch(orders, moments=moments) as batched:
                    for deadline in group:
                        made += fire_deadline(deadline, batched, deadline.due_at, policy)
                uow.commit()
        with uow:
            orders, ids = [e.order_id for e in chunk], [e.event_id for e in chunk]
            with uow.batch(orders, ids) as batched:
                for event in chunk:
                    made += record_event(event, batched, max(event.occurred_at, now), policy)
            uow.commit()
    return made


def a_groups_violation_windows_answer_any_as_the_per_question_query_does(
    engine: Engine, policy: Policy
) -> None:
    """store/sql/batch.py `Window` for violations: a merchant per boundary time, each with one
    standing violation there (PostgreSQL reads "any?" by a probe, SQLite by a count)."""
    width, lo = timedelta(days=30), T0
    hi = lo + timedelta(seconds=1)
    tick = timedelta(milliseconds=1)
    times = [lo - width - tick, lo - width, hi - width - tick, hi - width, lo - tick, lo, hi]
    merchants = {f"m{number}": at for number, at in enumerate(times)}
    with sql_uow(engine) as uow:
        for merchant, at in merchants.items():
            uow.outcomes.record(
                Outcome(kind="violation", rule="r", order_id=f"o-{merchant}",
                        merchant_id=merchant, at=at, clause="x", category="c", points=1)
            )  # fmt: skip
        uow.commit()
    with sql_uow(engine) as uow:
        window = Window(lo, hi, width, set(merchants))
        _read_window(uow.session, window, ("violations", "c"))
        for until in (lo, lo + timedelta(milliseconds=500), hi):
            since = until - width
            for merchant, at in merchants.items():
                inside = since <= at < until  # half-open, as the query
                assert (window.total(merchant, since, until, closed=False) > 0) == inside
                assert uow.outcomes.any_violation_between(merchant, "c", since, until) == inside


CHECKS = [
    a_groups_violation_windows_answer_any_as_the_per_question_query_does,
    batches_record_what_one_by_one_does,
    batches_judge_working_time_clocks_as_one_by_one_does,
    working_time_clocks_keep_their_calendar_and_pauses,
    several_cases_of_one_rule_keep_their_own_clocks,
    special_periods_reschedule_stored_orders,
    migrations_match_the_models,
    same_outcomes_as_memory,
    a_violation_withdrawn_after_its_order_moved_leaves_its_first_merchant,
    late_evidence_is_kept_not_deleted,
    a_failed_transaction_leaves_nothing,
    the_schema_refuses_a_second_standing_violation,
    the_schema_refuses_the_same_outcome_twice,
    times_come_back_aware_in_utc,
]
