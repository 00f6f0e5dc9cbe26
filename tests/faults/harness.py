"""The fault tests' moving parts: an event stream with known answers, a producer that publishes
it in real time (and re-sends what a broker crash may have lost), the runtime's processes on the
private servers, and the oracle every test ends with (`check_after_drain`)."""

from __future__ import annotations

import os
import random
import re
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import redis
from sqlalchemy import Engine, func, select, text

from config.policy import load_policy
from config.settings import Settings
from models.events import Event, canonical_body
from models.policy import Policy
from store.sql.tables import DeadlineRow, InboxRow, LedgerRow, OutcomeRow
from tests.builders import (
    cancel_requested,
    cancel_reviewed,
    collected,
    contacted,
    created,
    stockout,
)
from tests.faults.figures import FIGURES
from tests.runtime import FAST_POLICY, Processes, runtime_env, wait_for
from worker.ingest.consumer import connect, publish_events
from worker.ingest.redis_source import envelope_message
from worker.service.replay import Replayer

HOUR = timedelta(milliseconds=float(os.environ.get("SLATIMER_FAULTS_HOUR_MS", "100")))
ORDERS = int(os.environ.get("SLATIMER_FAULTS_ORDERS", "48"))
SPREAD = float(os.environ.get("SLATIMER_FAULTS_SPREAD", "8"))
"""Seconds over which the orders of a stream are created."""
LATE_TOLERANCE = float(os.environ.get("SLATIMER_FAULTS_LATE_TOLERANCE", "15"))
"""Seconds a deadline may fire after it fell due (or after the runtime was back) under faults:
a killed worker's timer is re-armed after the grace, a restarted process needs ~2 s to start."""
RESEND_WINDOW = 2.5
"""Redis with `appendfsync everysec` may lose the last second of writes on `kill -9`: the
producer re-sends what it published in the seconds before a crash (idempotent by event_id)."""


def scaled_policy(directory: Path, hour: timedelta = HOUR) -> Path:
    """tests/policies/fast.toml (an hour is 50 ms) with another length of an hour."""
    factor = hour / timedelta(milliseconds=50)
    scaled = re.sub(
        r'"([0-9.]+)s"',
        lambda seconds: f'"{float(seconds.group(1)) * factor:g}s"',
        FAST_POLICY.read_text(),
    )
    path = directory / "faults-policy.toml"
    path.write_text(scaled)
    return path


# -- the stream ------------------------------------------------------------------------------

TEMPLATES: dict[str, list[tuple[float, str]]] = {
    # (hours after creation it happens, what). Evidence comes early (<= 10 h) and deadlines
    # late (>= 21 h), so a processing delay of about 1 s never turns on-time evidence late.
    "on_time": [(0, "created"), (10, "collected")],
    "never_collected": [(0, "created")],  # warnings 96 h, 114 h; violation 120 h
    "stockout_contacted": [(0, "created"), (2, "stockout"), (6, "agreed_cancel")],
    "stockout_silent": [(0, "created"), (2, "stockout")],  # 3.2.2 at 48 h stands
    "review_on_time": [(0, "created"), (1, "requested"), (3, "approved")],
    "review_missed": [(0, "created"), (1, "requested"), (8, "collected")],  # escalation 25 h
    "rejected_unshipped": [(0, "created"), (1, "requested"), (2, "rejected"), (8, "collected")],
    # violation at 120 h, retraction when the scan made at 110 h arrives at 150 h; the `tick`
    # (another order created at 150 h, just before) moves replay's clock as real time does
    "late_evidence": [(0, "created"), (150, "tick"), (150, "collected@110")],
}


def _event(what: str, order: str, merchant: str, base: datetime, at: datetime) -> Event:
    if what == "created":
        return created(order, at, merchant)
    if what == "tick":
        return created(f"{order}-tick", at, f"m-{order}-tick")
    if what.startswith("collected@"):
        return collected(order, base + float(what.split("@")[1]) * HOUR)
    makers: dict[str, Callable[[], Event]] = {
        "collected": lambda: collected(order, at),
        "stockout": lambda: stockout(order, at),
        "agreed_cancel": lambda: contacted(order, at),
        "requested": lambda: cancel_requested(order, at, f"{order}-c1"),
        "approved": lambda: cancel_reviewed(order, at, "approved", f"{order}-c1"),
        "rejected": lambda: cancel_reviewed(order, at, "rejected", f"{order}-c1"),
    }
    return makers[what]()


@dataclass
class Stream:
    """(when to publish, event) in publish order, and the time by which every clock is done."""

    arrivals: list[tuple[datetime, Event]]
    end: datetime

    @property
    def events(self) -> list[Event]:
        return [event for _, event in self.arrivals]


def make_stream(t0: datetime, seed: int, orders: int = ORDERS, spread: float = SPREAD) -> Stream:
    """`orders` orders, each of one template (every template present), created over `spread`
    seconds from t0; one merchant per order, so grading never depends on recording order."""
    rng = random.Random(seed)
    names = list(TEMPLATES)
    arrivals = []
    for number in range(orders):
        template = names[number % len(names)] if number < len(names) else rng.choice(names)
        order = f"s{seed}-o{number:03d}"
        base = t0 + timedelta(seconds=rng.uniform(0, spread))
        for hours, what in TEMPLATES[template]:
            at = base + hours * HOUR
            arrivals.append((at, _event(what, order, f"m-{order}", base, at)))
    arrivals.sort(key=lambda pair: pair[0])
    end = max(at for at, _ in arrivals) + 2 * HOUR
    return Stream(arrivals, end)


# -- the producer ----------------------------------------------------------------------------


@dataclass
class Producer:
    """Publishes a stream when each event happens; retries until the broker takes it, and
    after a broker crash re-sends what the crash may have lost. `confirmed` is in first-publish
    order: the order replay is fed."""

    settings: Settings
    stream: Stream
    confirmed: list[Event] = field(default_factory=list)
    sent_at: dict[str, float] = field(default_factory=dict)
    crashes: list[float] = field(default_factory=list)
    resent: int = 0
    done: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> None:
        threading.Thread(target=self._run, daemon=True).start()

    def broker_crashed(self) -> None:
        with self._lock:
            self.crashes.append(time.monotonic())

    def wait(self, timeout: float) -> None:
        if not self.done.wait(timeout):
            raise AssertionError("the producer did not finish")
        if self.error is not None:
            raise AssertionError(f"the producer failed: {self.error!r}")

    def _run(self) -> None:
        try:
            for at, event in self.stream.arrivals:
                time.sleep(max(0.0, (at - datetime.now(UTC)).total_seconds()))
                self._resend_at_risk()
                self._publish(event)
                self.confirmed.append(event)
                self.sent_at[event.event_id] = time.monotonic()
            time.sleep(RESEND_WINDOW)
            self._resend_at_risk()
        except BaseException as error:  # noqa: BLE001 - reported by wait()
            self.error = error
        finally:
            self.done.set()

    def _resend_at_risk(self) -> None:
        with self._lock:
            crashes, self.crashes = self.crashes, []
        for crash in crashes:
            for event in self.confirmed:
                if crash - RESEND_WINDOW <= self.sent_at[event.event_id] <= crash:
                    self._publish(event)
                    self.resent += 1

    def _publish(self, event: Event) -> None:
        deadline = time.monotonic() + 60
        while True:
            try:
                with connect(self.settings) as connection:
                    publish_events(connection, [canonical_body(event)], self.settings)
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)


# -- the runtime -----------------------------------------------------------------------------


def fault_env(
    database_url: str, broker_url: str, policy_file: Path, **extra: str
) -> dict[str, str]:
    """The runtime's settings for fault tests: short horizon, grace and visibility timeout, so
    a killed process's messages and timers come back within seconds, not hours."""
    return runtime_env(
        database_url,
        broker_url,
        SLATIMER_POLICY_FILE=str(policy_file),
        SLATIMER_TIMER_HORIZON="2",
        SLATIMER_REDISPATCH_GRACE="2",
        SLATIMER_VISIBILITY_TIMEOUT="6",
        SLATIMER_INGEST_VISIBILITY_TIMEOUT="4",
        SLATIMER_INGEST_BATCH_SIZE="20",
        SLATIMER_LOG_LEVEL="WARNING",
        **extra,
    )


def start_all(children: Processes, dispatchers: int = 1) -> None:
    children.start("ingest")
    children.start("worker")
    for number in range(dispatchers):
        children.start("dispatcher", f"dispatcher-{number}")


KNOWN_EXITS: dict[str, str] = {
    # role -> a line in its log that explains an exit the suite accepts. Empty: kombu 5.7's
    # exit of the worker on a Redis crash (AttributeError ... 'hostname' / 'client') is fixed by
    # tasks/kombu_redis.py, so every exit is a failure now (docs/faults.md)
}


@dataclass(frozen=True)
class Exit:
    """A child that exited on its own, with the end of its log."""

    name: str
    code: int
    log_tail: str

    @property
    def known(self) -> bool:
        signature = KNOWN_EXITS.get(self.name.split("-")[0])
        return signature is not None and signature in self.log_tail


class Supervised(Processes):
    """The runtime's children kept up as compose's `restart:` or `slatimer run` keep them in
    production: a child that exits on its own is started again at once, and its exit is kept
    for the test to judge (`unexplained_exits`)."""

    def __init__(
        self, env: dict[str, str], log_dir: Path, broker_for: dict[str, str] | None = None
    ) -> None:
        super().__init__(env, log_dir)
        self.broker_for = broker_for or {}
        self.lock = threading.RLock()
        self.exits: list[Exit] = []
        self._log_start: dict[str, int] = {}
        self._stop = threading.Event()
        self._watcher = threading.Thread(target=self._watch, daemon=True)
        self._watcher.start()

    def start(self, role: str, name: str | None = None, *args: str) -> Any:
        with self.lock:
            log = self._log(name or role)
            self._log_start[name or role] = log.stat().st_size if log.exists() else 0
            return super().start(role, name, *args)

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        with self.lock:
            super().kill(name, sig)

    def restart(self, name: str) -> None:
        """SIGKILL one child and start it again under the same name."""
        with self.lock:
            self.kill(name)
            self.start(name.split("-")[0], name)

    def env_for(self, role: str) -> dict[str, str]:
        """The runtime's settings; a role in `broker_for` reaches the broker at another URL."""
        if role not in self.broker_for:
            return self.env
        return {**self.env, "SLATIMER_BROKER_URL": self.broker_for[role]}

    def unexplained_exits(self) -> list[Exit]:
        return [exit for exit in self.exits if not exit.known]

    def stop_all(self) -> None:
        self._stop.set()
        self._watcher.join(timeout=10)
        super().stop_all()

    def _log(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    def _watch(self) -> None:
        while not self._stop.wait(0.2):
            with self.lock:
                for name, process in list(self.running.items()):
                    code = process.poll()
                    if code is not None:
                        self._restart_exited(name, code)

    def _restart_exited(self, name: str, code: int) -> None:
        with self._log(name).open("rb") as log:  # this incarnation's output only
            log.seek(self._log_start.get(name, 0))
            tail = log.read().decode(errors="replace")[-6000:]
        self.exits.append(Exit(name, code, tail))
        FIGURES.add("supervised_restarts")
        self.start(name.split("-")[0], name)


@contextmanager
def supervised(
    env: dict[str, str], log_dir: Path, broker_for: dict[str, str] | None = None
) -> Iterator[Supervised]:
    children = Supervised(env, log_dir, broker_for)
    try:
        yield children
    finally:
        children.stop_all()


# -- the oracle ------------------------------------------------------------------------------


def scalar(engine: Engine, query: Any) -> int:
    with engine.connect() as connection:
        return int(connection.scalar(query) or 0)


def open_deadlines_due_by(engine: Engine, moment: datetime) -> int:
    return scalar(
        engine,
        select(func.count())
        .select_from(DeadlineRow)
        .where(DeadlineRow.state.in_(("pending", "enqueued")), DeadlineRow.due_at <= moment),
    )


def drain(engine: Engine, producer: Producer, children: Processes, timeout: float = 90) -> None:
    """Wait until every confirmed event is in the inbox and every clock of the stream is done."""
    ids = {event.event_id for event in producer.confirmed}
    try:
        producer.wait(timeout)
        try:
            wait_for(lambda: inbox_ids(engine) >= ids, timeout, "every confirmed event in")
        except AssertionError:
            return  # check_after_drain names the lost events and counts them
        end = producer.stream.end
        wait_for(lambda: datetime.now(UTC) > end, timeout, "the end of the stream")
        wait_for(lambda: open_deadlines_due_by(engine, end) == 0, timeout, "every clock done")
    except AssertionError as error:
        raise AssertionError(f"{error}\n{children.logs()}") from None
    time.sleep(2)  # a redelivered duplicate has had time to run


def inbox_ids(engine: Engine) -> set[str]:
    with engine.connect() as connection:
        return set(connection.scalars(select(InboxRow.event_id)))


DUPLICATE_CHECKS = {
    "outcomes": "order_id, kind, rule, subject, at",
    "points_ledger": "order_id, rule, subject, outcome_at, entry",
    "alerts": "alert_id",
    "inbox": "event_id",
}


def duplicates(engine: Engine) -> dict[str, int]:
    """count(*) - count(distinct key) per table: what was recorded twice."""
    found = {}
    with engine.connect() as connection:
        for table, key in DUPLICATE_CHECKS.items():
            found[table] = int(
                connection.scalar(
                    text(
                        f"select count(*) - (select count(*) from "  # noqa: S608 - fixed names
                        f"(select distinct {key} from {table}) d) from {table}"
                    )
                )
                or 0
            )
    return found


def replay(events: list[Event], until: datetime, policy: Policy) -> list[Any]:
    replayer = Replayer(policy)
    for event in events:
        replayer.feed(event)
    return replayer.finish(until).outcomes


def standing(outcomes: list[Any]) -> list[tuple[Any, ...]]:
    """Violations and escalations not withdrawn, with severity and points (replay's shape)."""
    withdrawn = {
        (o.order_id, o.rule, o.subject, o.deadline) for o in outcomes if o.kind == "retraction"
    }
    return sorted(
        (o.order_id, o.kind, o.rule, o.subject or "", o.at, o.severity, o.points)
        for o in outcomes
        if o.kind in ("violation", "escalation")
        and (o.order_id, o.rule, o.subject, o.at) not in withdrawn
    )


def standing_recorded(engine: Engine, until: datetime) -> list[tuple[Any, ...]]:
    """The store's standing violations and escalations due by `until`, in `standing`'s shape."""
    query = select(
        OutcomeRow.order_id,
        OutcomeRow.kind,
        OutcomeRow.rule,
        OutcomeRow.subject,
        OutcomeRow.at,
        OutcomeRow.severity,
        OutcomeRow.points,
    ).where(
        OutcomeRow.kind.in_(("violation", "escalation")),
        OutcomeRow.retracted.is_(False),
        OutcomeRow.at <= until,
    )
    with engine.connect() as connection:
        return sorted(tuple(row) for row in connection.execute(query))


def all_recorded(engine: Engine, kinds: tuple[str, ...], until: datetime) -> list[tuple[Any, ...]]:
    """Every outcome of `kinds` due by `until` in the store, keyed as replay's are (retractions
    by the deadline they withdraw: their own `at` is when they were learnt, a real-clock time)."""
    from store.sql.tables import RetractionRow

    due = OutcomeRow.at <= until
    with engine.connect() as connection:
        rows = connection.execute(
            select(OutcomeRow.order_id, OutcomeRow.kind, OutcomeRow.rule, OutcomeRow.subject,
                   OutcomeRow.at, OutcomeRow.points).where(OutcomeRow.kind.in_(kinds), due)
        ).all()  # fmt: skip
        withdrawn = connection.execute(
            select(OutcomeRow.order_id, OutcomeRow.rule, OutcomeRow.subject, OutcomeRow.at,
                   OutcomeRow.points).join(RetractionRow, RetractionRow.outcome_id == OutcomeRow.id)
            .where(due)
        ).all()  # fmt: skip
    found = [tuple(row) for row in rows]
    if "retraction" in kinds:
        found += [
            (order, "retraction", rule, subject, at, -points if points else None)
            for order, rule, subject, at, points in withdrawn
        ]
    return sorted(found)


def all_replayed(outcomes: list[Any], kinds: tuple[str, ...]) -> list[tuple[Any, ...]]:
    return sorted(
        (
            o.order_id,
            o.kind,
            o.rule,
            o.subject or "",
            o.deadline if o.kind == "retraction" else o.at,
            o.points,
        )
        for o in outcomes
        if o.kind in kinds
    )


Outage = tuple[datetime, datetime]
"""When a server the runtime needs was down: (crashed at, started again at)."""


def lateness(
    engine: Engine, not_before: datetime | None, outages: list[Outage] | None = None
) -> list[float]:
    """Seconds between each fired deadline (violation, escalation, warning: `at` is the due
    time) and its recording, measured from when the runtime could first have fired it: the
    due time, the restart (`not_before`, after an outage) or the receipt of the last of the
    order's events that happened by the due time (a deadline already past when the facts that
    make it reached the inbox, held up at a killed ingest, is judged on arrival: that delay is
    ingest's, counted apart), or the restart of a crashed server (`outages`) that was down at
    some moment between the due time and the recording: no timer fires while its broker or
    its database is down."""
    with engine.connect() as connection:
        rows = connection.execute(
            select(OutcomeRow.order_id, OutcomeRow.at, OutcomeRow.recorded_at).where(
                OutcomeRow.kind.in_(("violation", "escalation", "warning"))
            )
        ).all()
        received = connection.execute(
            select(InboxRow.order_id, InboxRow.occurred_at, InboxRow.received_at)
        ).all()
    arrivals: dict[str, list[tuple[datetime, datetime]]] = {}
    for order_id, occurred, got in received:
        arrivals.setdefault(order_id, []).append((occurred, got))
    late = []
    for order_id, at, recorded in rows:
        if recorded is None:
            continue
        facts = arrivals.get(order_id, [])
        learnt = max(
            (got for occurred, got in facts if occurred <= at and got <= recorded), default=at
        )
        start = max(at, learnt, not_before or at)
        back = [up for down, up in outages or [] if down <= recorded and up >= start]
        late.append((recorded - max([start, *back])).total_seconds())
    return late


def ingest_delays(engine: Engine) -> list[float]:
    """Seconds from each event's occurrence (the producer stamps it as it publishes) to its
    receipt into the inbox: how long the broker and a restarting ingest held it."""
    with engine.connect() as connection:
        rows = connection.execute(select(InboxRow.occurred_at, InboxRow.received_at)).all()
    return [(received - occurred).total_seconds() for occurred, received in rows]


def check_after_drain(
    engine: Engine,
    producer: Producer,
    policy_file: Path,
    exact: tuple[str, ...] = (),
    not_before: datetime | None = None,
    outages: list[Outage] | None = None,
) -> None:
    """The oracle. Every confirmed event is in the inbox once; nothing is recorded twice; the
    standing outcomes (and the ledger's points) are `slatimer replay`'s of the same events in
    publish order; the kinds in `exact` (e.g. warnings, retractions) match replay one for one;
    no deadline fired later than the tolerance."""
    policy = load_policy(policy_file)
    events = producer.confirmed
    expected = replay(events, producer.stream.end, policy)
    lost = {e.event_id for e in events} - inbox_ids(engine)
    doubles = duplicates(engine)
    late = lateness(engine, not_before, outages)
    FIGURES.add("events_published", len(events))
    FIGURES.add("events_lost", len(lost))
    FIGURES.add("duplicate_outcomes", sum(doubles.values()))
    FIGURES.add("outcomes_checked", len(expected))
    FIGURES.add("late_deadlines", sum(1 for s in late if s > LATE_TOLERANCE))
    FIGURES.peak("max_lateness_s", max(late, default=0.0))
    FIGURES.peak("max_ingest_delay_s", max(ingest_delays(engine), default=0.0))
    assert not lost, (
        f"{len(lost)} confirmed events never reached the inbox: {sorted(lost)[:5]}; "
        f"still on the broker: {still_queued(producer.settings, lost)}"
    )
    assert sum(doubles.values()) == 0, doubles
    # the runtime's clock runs on after the stream ends (the `tick` orders' clocks fall due
    # later): what is judged is what fell due by the end, the moment replay stops at
    end = producer.stream.end
    try:
        same("standing outcomes", standing_recorded(engine, end), standing(expected))
    except AssertionError as differs:
        raise AssertionError(f"{differs}\n{timelines(engine, str(differs))}") from None
    points = {k: v for k, v in points_by_merchant(expected).items() if v}
    same("net points", sorted(ledger_net(engine, end).items()), sorted(points.items()))
    if exact:
        exactly(engine, exact, expected, end)
    assert max(late, default=0.0) <= LATE_TOLERANCE, f"late deadlines: {sorted(late)[-5:]}"
    assert any(o.kind == "violation" for o in expected) and any(
        o.kind == "escalation" for o in expected
    )


def timelines(engine: Engine, report: str) -> str:
    """What the store holds of each order named in a failure report, in time order: events
    (happened, received) and outcomes (due, recorded), so a red run explains itself."""
    orders = sorted(set(re.findall(r"'([\w-]+-o\d+)'", report)))
    lines = []
    with engine.connect() as connection:
        for order in orders:
            lines.append(f"-- {order}")
            for row in connection.execute(
                select(InboxRow.type, InboxRow.occurred_at, InboxRow.received_at)
                .where(InboxRow.order_id == order)
                .order_by(InboxRow.received_at)
            ):
                lines.append(f"   event {row.type}: happened {row.occurred_at:%T.%f}, "
                             f"received {row.received_at:%T.%f}")  # fmt: skip
            for row in connection.execute(
                select(OutcomeRow.kind, OutcomeRow.rule, OutcomeRow.at, OutcomeRow.recorded_at)
                .where(OutcomeRow.order_id == order)
                .order_by(OutcomeRow.id)
            ):
                lines.append(f"   {row.kind} {row.rule}: at {row.at:%T.%f}, "
                             f"recorded {row.recorded_at:%T.%f}")  # fmt: skip
    return "\n".join(lines)


def exactly(engine: Engine, kinds: tuple[str, ...], expected: list[Any], end: datetime) -> None:
    """Outcomes of `kinds` one for one with replay, but for a breach raised and then withdrawn
    because evidence that met it in time reached the runtime only after its deadline (a backlog
    at ingest): the runtime cannot know of evidence still queued, replay knows all at once."""
    recorded, replayed = all_recorded(engine, kinds, end), all_replayed(expected, kinds)
    late = withdrawn_on_late_evidence(engine, end)
    explained = [row for row in recorded if row not in replayed and (row[0], *row[2:5]) in late]
    FIGURES.add("withdrawn_on_late_arrival", len(explained) // 2)
    same("outcomes", [row for row in recorded if row not in explained], replayed)


def withdrawn_on_late_evidence(engine: Engine, until: datetime) -> set[tuple[Any, ...]]:
    """(order, rule, subject, at) of each withdrawn breach due by `until` whose order has an
    event that happened by the deadline but was received after it."""
    late = (
        select(InboxRow.event_id)
        .where(
            InboxRow.order_id == OutcomeRow.order_id,
            InboxRow.occurred_at <= OutcomeRow.at,
            InboxRow.received_at > OutcomeRow.at,
        )
        .exists()
    )
    query = select(OutcomeRow.order_id, OutcomeRow.rule, OutcomeRow.subject, OutcomeRow.at).where(
        OutcomeRow.retracted.is_(True), OutcomeRow.at <= until, late
    )
    with engine.connect() as connection:
        return {tuple(row) for row in connection.execute(query)}


def same(what: str, recorded: list[Any], replayed: list[Any]) -> None:
    """Fail with what only the store has and what only replay has."""
    only_recorded = [row for row in recorded if row not in replayed]
    only_replayed = [row for row in replayed if row not in recorded]
    assert recorded == replayed, (
        f"{what} differ from replay: only recorded {only_recorded}, only replayed {only_replayed}"
    )


def still_queued(settings: Settings, event_ids: set[str]) -> dict[str, int]:
    """Redis: how many of `event_ids` wait on the order queue, or on an ingest consumer's taken
    list (taken, not yet acknowledged or restored): slow, not lost. Other brokers: {}."""
    if not settings.broker_url.startswith("redis"):
        return {}
    client = redis.Redis.from_url(settings.broker_url)
    taken = client.keys(f"{settings.order_queue}.taken.*")
    places = {
        "queued": client.lrange(settings.order_queue, 0, -1),
        "taken": [raw for key in taken for raw in client.lrange(key, 0, -1)],
    }
    return {
        place: sum(any(event_id.encode() in _body(raw) for event_id in event_ids) for raw in raws)
        for place, raws in places.items()
    }


def _body(raw: bytes) -> bytes:
    """The producer's bytes inside a kombu Redis envelope."""
    return envelope_message(raw).body


def ledger_net(engine: Engine, until: datetime) -> dict[str, int]:
    """Each merchant's net points for outcomes due by `until`."""
    with engine.connect() as connection:
        rows = connection.execute(
            select(LedgerRow.merchant_id, func.sum(LedgerRow.points))
            .where(LedgerRow.outcome_at <= until)
            .group_by(LedgerRow.merchant_id)
        ).all()
    return {merchant: int(total) for merchant, total in rows if total}


def points_by_merchant(outcomes: list[Any]) -> dict[str, int]:
    totals: dict[str, int] = {}
    for outcome in outcomes:
        if outcome.points and outcome.merchant_id:
            totals[outcome.merchant_id] = totals.get(outcome.merchant_id, 0) + outcome.points
    return totals
