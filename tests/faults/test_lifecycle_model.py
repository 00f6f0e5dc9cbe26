"""A stateful model of the order lifecycle: hypothesis drives the real handlers
(worker.service.handlers, on a virtual clock as worker.service.replay does) on a SQLite file
store, crashing and rebuilding the unit of work at will, and after every step compares the
standing violations and escalations with a tiny oracle written here, independently of
models.rules, for 2.1.1 (collection in 120 h), 3.2.2 (contact within 48 h of the order after
a stock-out) and 2.2.3 (cancellation review within 24 h)."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from sqlalchemy import select

from config.policy import load_policy
from config.settings import DEFAULT_POLICY
from models.events import Event
from store.sql.engine import make_engine
from store.sql.migrate import upgrade
from store.sql.tables import OutcomeRow
from tests.builders import T0, cancel_requested, cancel_reviewed, collected, contacted, created
from tests.builders import shipped as shipped_event
from tests.builders import stockout as stockout_event
from tests.conftest import sql_uow
from tests.faults.figures import FIGURES
from worker.service.handlers import fire_deadline, record_event

pytestmark = pytest.mark.faults
H = timedelta(hours=1)
POLICY = load_policy(DEFAULT_POLICY)
RULES = ("collection_overdue", "stockout_contact_overdue", "cancellation_review_overdue")
STEPS = int(os.environ.get("SLATIMER_FAULTS_MODEL_EXAMPLES", "40"))
PHASES = [Phase.explicit, Phase.reuse, Phase.generate]  # shrinking a store run is slow
Key = tuple[str, str, str, str, datetime]  # order, kind, rule, subject, at


@dataclass
class Facts:
    """What is known of one order (the earliest of each kind of fact counts)."""

    created: datetime
    collected: datetime | None = None
    stockout: datetime | None = None
    contacts: list[datetime] = field(default_factory=list)
    requests: dict[str, datetime] = field(default_factory=dict)
    reviews: dict[str, tuple[datetime, str]] = field(default_factory=dict)

    def approved(self) -> datetime | None:
        times = [at for at, decision in self.reviews.values() if decision == "approved"]
        return min(times, default=None)

    def breaches(self, now: datetime) -> list[tuple[datetime, str, str]]:
        """(due, rule, subject) of each obligation breached as of `now`."""
        found = []
        ended = [
            t for t in (self.collected, self.approved(), min(self.contacts, default=None)) if t
        ]
        due = self.created + 120 * H
        if not ended or min(ended) > due:
            found.append((due, "collection_overdue", ""))
        if self.stockout is not None:
            window = self.created + 48 * H
            ends = [
                t for t in (min(self.contacts, default=None), self.collected, self.approved()) if t
            ]
            if not ends or min(ends) > window:
                found.append((max(window, self.stockout), "stockout_contact_overdue", ""))
        for cid, requested in self.requests.items():
            if self.collected is not None and self.collected <= requested:
                continue
            review = self.reviews.get(cid)
            if review is None or review[0] > requested + 24 * H:
                found.append((requested + 24 * H, "cancellation_review_overdue", cid))
        return sorted(b for b in found if b[0] <= now)


@dataclass
class Oracle:
    """Standing outcomes per order, reconciled like the rules say: withdraw what late evidence
    disproves, raise new breaches in due order, never re-raise a withdrawn key, at most one
    standing out-of-stock violation per order."""

    facts: dict[str, Facts] = field(default_factory=dict)
    standing: set[Key] = field(default_factory=set)
    ever: set[Key] = field(default_factory=set)

    def reconcile(self, order: str, now: datetime) -> None:
        breached = [
            (order, "escalation" if r.startswith("cancel") else "violation", r, s, due)
            for due, r, s in self.facts[order].breaches(now)
        ]
        mine = {k for k in self.standing if k[0] == order}
        self.standing -= {k for k in mine if k not in breached}
        taken = any(k[1] == "violation" for k in self.standing if k[0] == order)
        for key in breached:
            if key in self.ever:
                continue
            if key[1] == "violation":
                if taken:
                    continue
                taken = True
            self.standing.add(key)
            self.ever.add(key)

    def due_times(self, order: str) -> list[datetime]:
        facts = self.facts[order]
        times = [facts.created + 120 * H]
        if facts.stockout:
            times.append(max(facts.created + 48 * H, facts.stockout))
        times += [at + 24 * H for at in facts.requests.values()]
        return times


class OrderLifecycle(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.directory = Path(tempfile.mkdtemp(prefix="slt-model-"))
        self.url = f"sqlite:///{self.directory / 'store.db'}"
        self.engine = make_engine(self.url)
        upgrade(self.engine)
        self.now = T0
        self.oracle = Oracle()
        self.sent: list[Event] = []
        self.numbers = 0

    def teardown(self) -> None:
        self.engine.dispose()
        for path in self.directory.iterdir():
            path.unlink()
        self.directory.rmdir()

    # -- driving the real handlers ---------------------------------------------------------
    def deliver(self, event: Event) -> None:
        with sql_uow(self.engine) as uow:
            record_event(event, uow, self.now, POLICY)
            uow.commit()
        self.sent.append(event)
        FIGURES.add("model_steps")

    def fire_until(self, until: datetime) -> None:
        """worker.service.replay.Replayer.fire_until's loop, with a guard: a deadline `due()`
        returns again after it fired would make replay loop forever."""
        seen: list[object] = []
        while True:
            with sql_uow(self.engine) as uow:
                due = uow.deadlines.due(until, 100)
            if not due:
                return
            assert due != seen, f"deadlines returned again after firing: {due}"
            seen = due
            for deadline in due:
                self.now = max(self.now, deadline.due_at)
                with sql_uow(self.engine) as uow:
                    fire_deadline(deadline, uow, self.now, POLICY)
                    uow.commit()

    def when(self, order: str, lag_hours: int) -> datetime:
        """An event time `lag_hours` in the past (late evidence), never before the order."""
        return max(self.oracle.facts[order].created, self.now - lag_hours * H)

    # -- rules -----------------------------------------------------------------------------
    @rule()
    def create(self) -> None:
        order = f"o{self.numbers}"
        self.numbers += 1
        self.oracle.facts[order] = Facts(self.now)
        self.deliver(created(order, self.now, f"m-{order}"))
        self.oracle.reconcile(order, self.now)

    orders = st.integers(min_value=0, max_value=50)
    lags = st.sampled_from([0, 0, 1, 10, 30, 100])

    def pick(self, index: int) -> str:
        return sorted(self.oracle.facts)[index % len(self.oracle.facts)]

    @precondition(lambda self: self.oracle.facts)
    @rule(index=orders, lag=lags, kind=st.sampled_from(["collect", "ship", "stockout", "contact"]))
    def order_event(self, index: int, lag: int, kind: str) -> None:
        order = self.pick(index)
        at, facts = self.when(order, lag), self.oracle.facts[order]
        if kind == "collect":
            facts.collected = min(filter(None, [facts.collected, at]))
            self.deliver(collected(order, at))
        elif kind == "ship":
            self.deliver(shipped_event(order, at))
        elif kind == "stockout":
            facts.stockout = min(filter(None, [facts.stockout, at]))
            self.deliver(stockout_event(order, at))
        else:
            facts.contacts.append(at)
            self.deliver(contacted(order, at))
        self.oracle.reconcile(order, self.now)

    @precondition(lambda self: self.oracle.facts)
    @rule(index=orders, lag=lags, cid=st.sampled_from(["c1", "c2"]))
    def cancel(self, index: int, lag: int, cid: str) -> None:
        order = self.pick(index)
        at, facts = self.when(order, lag), self.oracle.facts[order]
        facts.requests[cid] = min(filter(None, [facts.requests.get(cid), at]))
        self.deliver(cancel_requested(order, at, cid))
        self.oracle.reconcile(order, self.now)

    @precondition(lambda self: any(f.requests for f in self.oracle.facts.values()))
    @rule(index=orders, lag=lags, decision=st.sampled_from(["approved", "rejected"]))
    def review(self, index: int, lag: int, decision: str) -> None:
        asked = sorted(o for o, f in self.oracle.facts.items() if f.requests)
        order = asked[index % len(asked)]
        facts = self.oracle.facts[order]
        cid = sorted(facts.requests)[0]
        if cid in facts.reviews:
            return  # one review per cancellation
        at = max(self.when(order, lag), facts.requests[cid])
        facts.reviews[cid] = (at, decision)
        self.deliver(cancel_reviewed(order, at, decision, cid))
        self.oracle.reconcile(order, self.now)

    @rule(hours=st.sampled_from([1, 6, 23, 25, 47, 49, 119, 121, 200]))
    def advance_clock(self, hours: int) -> None:
        target = self.now + hours * H
        moments = sorted(
            (t, o)
            for o in self.oracle.facts
            for t in self.oracle.due_times(o)
            if self.now < t <= target
        )
        self.fire_until(target)
        for moment, order in moments:
            self.oracle.reconcile(order, moment)
        self.now = target

    @precondition(lambda self: self.sent)
    @rule(index=st.integers(min_value=0, max_value=10_000))
    def redeliver(self, index: int) -> None:
        self.deliver(self.sent[index % len(self.sent)])

    @rule()
    def crash_and_restart(self) -> None:
        """Drop every in-memory object and rebuild the store from its SQLite file."""
        self.engine.dispose()
        self.engine = make_engine(self.url)

    # -- the invariant ---------------------------------------------------------------------
    @invariant()
    def standing_outcomes_are_the_oracles(self) -> None:
        query = select(
            OutcomeRow.order_id, OutcomeRow.kind, OutcomeRow.rule, OutcomeRow.subject, OutcomeRow.at
        ).where(
            OutcomeRow.kind.in_(("violation", "escalation")),
            OutcomeRow.rule.in_(RULES),
            OutcomeRow.retracted.is_(False),
        )
        with self.engine.connect() as connection:
            found = {tuple(row) for row in connection.execute(query)}
        assert found == self.oracle.standing


OrderLifecycle.TestCase.settings = settings(
    max_examples=STEPS, stateful_step_count=30, deadline=None, phases=PHASES
)
TestOrderLifecycle = OrderLifecycle.TestCase
