"""Grading independent of firing order on real PostgreSQL: clocks fired latest first (one by one
and set-based), and concurrent transactions on one merchant's orders — serialized by the
merchant's advisory lock, and where a cycle with an order lock remains (ingest takes the
merchant lock after its order's), aborted by PostgreSQL's deadlock check and redone as the
runtime redoes it, with the grades replay gives."""

from __future__ import annotations

import sys
import threading
import time
import traceback
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError

from models.clock import VirtualClock
from models.events import canonical_body
from models.policy import Policy
from store.base import DueDeadline, UnitOfWork
from tests.builders import T0, H, collected, created
from tests.conftest import sql_uow
from tests.firing_order import after_outage, due_by, ingest, recorded, replayed
from worker.ingest.batch import RawMessage, ingest_batch, is_connectivity_error
from worker.service.handlers import fire_deadline
from worker.timers.firing import fire_due

pytestmark = pytest.mark.integration

BACK = T0 + 130 * H
WAIT = 20.0
"""Wall-clock seconds to wait for the other transaction to block (it takes milliseconds)."""


@pytest.mark.parametrize("set_based", [False, True], ids=["one-by-one", "set-based"])
def test_clocks_of_one_merchant_fired_latest_first_are_graded_as_replay_on_postgres(
    pg_engine: Engine, shipped_policy: Policy, set_based: bool
) -> None:
    # Given three never-collected orders of one merchant, an hour apart
    events = [created(f"o{n}", T0 + n * H) for n in range(3)]
    # When all three are overdue and fire latest first, one task each
    uow = sql_uow(pg_engine)
    got = after_outage(uow, events, shipped_policy, BACK, set_based, one_task_each=True)
    # Then general 4, serious 8, serious 8 and one 12-point crossing, as replay says
    assert got == replayed(events, shipped_policy, BACK)
    assert sorted(line[5] or "" for line in got if line[1] == "violation") == [
        "general",
        "serious",
        "serious",
    ]


def test_two_workers_firing_two_clocks_of_one_merchant_take_turns(
    pg_engine: Engine, shipped_policy: Policy
) -> None:
    # Given two overdue collection clocks of one merchant (o0 due at 120 h, o1 at 121 h)
    events = [created("o0", T0), created("o1", T0 + H)]
    uow = sql_uow(pg_engine)
    ingest(uow, events, shipped_policy)
    first, second = collection_clocks(uow)
    # When one worker fires the later clock and, before it commits, another fires the earlier
    later = sql_uow(pg_engine)
    with later:
        fire_deadline(second, later, BACK, shipped_policy)  # held open: no commit yet
        other = Worker(
            lambda: fire_due([first], lambda: sql_uow(pg_engine), clock(), shipped_policy)
        )
        wait_until_blocked(pg_engine, other)  # on the merchant's lock, not a deadlock
        later.commit()
    other.join()
    # Then neither failed, and o0 is general, o1 a repeat: as replay grades them
    assert other.error is None
    assert recorded(uow, ["o0", "o1"]) == replayed(events, shipped_policy, BACK)


def test_a_set_based_timer_group_waits_for_its_merchants_before_locking_any_order(
    pg_engine: Engine, shipped_policy: Policy
) -> None:
    # Given o0's overdue collection clock, and another worker holding o0's merchant
    events = [created("o0", T0)]
    uow = sql_uow(pg_engine)
    ingest(uow, events, shipped_policy)
    [first] = collection_clocks(uow)
    holder = sql_uow(pg_engine)
    with holder:
        holder.orders.lock_merchant("m-1")
        # When a set-based group grading o0's clock starts
        group = Worker(
            lambda: fire_due([first], lambda: sql_uow(pg_engine), clock(), shipped_policy, True)
        )
        wait_until_blocked(pg_engine, group)
        # Then it waits on the merchant (fire_deadline's lock order) holding no order yet:
        # o0 can still be locked by a third transaction without waiting
        with pg_engine.connect() as third:
            third.execute(text("SET lock_timeout = '200ms'"))
            locked = third.execute(
                text("SELECT order_id FROM orders WHERE order_id = 'o0' FOR UPDATE")
            ).scalar()
            assert locked == "o0"
            third.rollback()
        holder.commit()
    group.join()
    # And once the merchant is free it grades o0 as replay does
    assert group.error is None
    assert recorded(uow, ["o0"]) == replayed(events, shipped_policy, BACK)


def test_a_deadlock_between_ingest_and_a_timer_is_redone_with_replays_grades(
    pg_engine: Engine, shipped_policy: Policy
) -> None:
    # Given o0's collection (due 120 h) and o1's (due 121 h) overdue, and o0's late collection
    # scan arriving at 130 h: replay grades o0 general and o1 serious
    events = [created("o0", T0), created("o1", T0 + H)]
    late_scan = collected("o0", BACK)
    uow = sql_uow(pg_engine)
    ingest(uow, events, shipped_policy)
    _, o1_clock = collection_clocks(uow)
    # When ingest holds o0 while the timer of o1 (holding the merchant) waits for o0, then
    # ingest grades o0's breach and waits for the merchant: a cycle PostgreSQL breaks
    attempts = {"ingest": 0, "timer": 0}

    def ingest_once(hold: bool) -> None:
        attempts["ingest"] += 1
        with sql_uow(pg_engine) as batch:
            if hold:
                batch.orders.lock("o0")
                timer.start_once()
                wait_until_blocked(pg_engine, timer)
            message = RawMessage(canonical_body(late_scan))
            ingest_batch([message], batch, BACK, shipped_policy, "test", timedelta(0), False)
            batch.commit()

    def fire_once() -> None:
        attempts["timer"] += 1
        fire_due([o1_clock], lambda: sql_uow(pg_engine), clock(), shipped_policy)

    timer = Worker(lambda: redone(fire_once), start=False)
    redone(lambda: ingest_once(hold=attempts["ingest"] == 0))
    timer.join()
    # Then one of them was aborted and redone, nothing failed, and the grades are replay's
    assert timer.error is None
    assert attempts["ingest"] + attempts["timer"] == 3
    assert recorded(uow, ["o0", "o1"]) == replayed([*events, late_scan], shipped_policy, BACK)


def collection_clocks(uow: UnitOfWork) -> list[DueDeadline]:
    """The overdue 2.1.1 clocks, in due order (their warnings' rows are due too)."""
    due = [d for d in due_by(uow, BACK) if d.rule == "collection_overdue"]
    return sorted(due, key=lambda d: d.rank)


def clock() -> VirtualClock:
    return VirtualClock(BACK)


def redone(attempt: Callable[[], None], times: int = 3) -> None:
    """As the runtime redoes work PostgreSQL aborted: the check task retries on DBAPIError
    (tasks/timers.py), ingest requeues a batch on a connectivity-class error."""
    for remaining in range(times - 1, -1, -1):
        try:
            attempt()
            return
        except DBAPIError as error:
            assert is_connectivity_error(error), error  # what both paths retry on
            if not remaining:
                raise


def _sessions(connection: Any) -> list[Any]:
    """What every session of this database is doing (for a failure report)."""
    query = text(
        "SELECT pid, state, wait_event_type, wait_event, left(query, 120) FROM pg_stat_activity "
        "WHERE datname = current_database()"
    )
    return [tuple(row) for row in connection.execute(query)]


class Worker:
    """Another worker process's transaction, on a thread; its exception is kept."""

    def __init__(self, work: Callable[[], object], start: bool = True) -> None:
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(work,), daemon=True)
        self.started = False
        if start:
            self.start_once()

    def start_once(self) -> None:
        if not self.started:
            self.started = True
            self.thread.start()

    def _run(self, work: Callable[[], object]) -> None:
        try:
            work()
        except BaseException as error:  # noqa: BLE001 - reported by the test
            self.error = error

    def stack(self) -> str:
        """Where the thread is now (for a failure report)."""
        frame = sys._current_frames().get(self.thread.ident or -1)
        return "".join(traceback.format_stack(frame)) if frame else "(not running)"

    def join(self) -> None:
        self.thread.join(WAIT)
        assert not self.thread.is_alive(), "the other worker never finished"


def wait_until_blocked(engine: Engine, worker: Worker | None = None) -> None:
    """Until another session of this database waits on a lock (a wall-clock condition on the
    server, not rule time). A `worker` that ends instead fails the wait at once, with why."""
    query = text(
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    deadline = time.monotonic() + WAIT
    with engine.connect() as connection:
        while not connection.execute(query).scalar():
            assert time.monotonic() < deadline, (
                f"the other worker never blocked: {_sessions(connection)}"
            )
            if worker is not None and worker.started and not worker.thread.is_alive():
                raise AssertionError(f"the other worker ended without blocking: {worker.error!r}")
            time.sleep(0.01)
