"""Durable timers: the deadline table is the truth; Celery ETA tasks only cover a short horizon.

The dispatcher claims deadlines due within the horizon and sends one Celery message per small
group of deadlines due close together (a sales-day wave becomes hundreds of messages, not 100,000).
The check task fires each deadline in its own savepoint: one bad order cannot block the others.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog
from sqlalchemy.exc import InterfaceError, OperationalError

from models.clock import Clock
from models.outcomes import iso
from models.policy import Policy
from models.rules import VIOLATION_RULES
from store.base import DueDeadline, Unisolated, UnitOfWork
from worker.process import metrics
from worker.service.handlers import fire_deadline

log = structlog.get_logger("slatimer.timers")

Publish = Callable[[list[DueDeadline], datetime], None]
"""Send one check task for these deadlines, to run at the given time (the latest due_at)."""


@dataclass(frozen=True)
class TimerPolicy:
    horizon: timedelta
    """How far ahead deadlines become Celery ETA tasks."""
    batch: int
    """How many deadlines one dispatch pass claims at most."""
    redispatch_grace: timedelta
    """How long past due an enqueued deadline may stay unfired before it is sent again."""
    group_window: timedelta = timedelta(milliseconds=250)
    group_size: int = 200
    lanes: int = 8
    """How many merchant-disjoint lanes a window with more than `group_size` deadlines is laid
    out in (`group_for_eta`)."""


def group_for_eta(
    deadlines: Sequence[DueDeadline], window: timedelta, size: int, lanes: int = 1
) -> list[list[DueDeadline]]:
    """Split deadlines (earliest first) into groups due within `window` of the group's first,
    at most `size` each; a group's task runs at its last due time, so none fires early and
    none fires later than `window` after its due time.

    With `lanes`, a window holding more than `size` deadlines (a wave) is first split by
    merchant into up to that many lanes, each merchant always in the same lane, and the
    lanes' groups are interleaved by due time. Groups that run at once then touch different
    merchants: a group holds its merchants' locks until it commits, and grading is in due
    order per merchant, so two workers running groups of the same merchants would take turns
    (docs/runtime.md, "Scaling the worker out")."""
    if lanes <= 1:
        return _by_window(deadlines, window, size)
    groups: list[list[DueDeadline]] = []
    for span in _by_window(deadlines, window, len(deadlines)):
        if len(span) <= size:
            groups.append(span)
            continue
        count = min(lanes, -(-len(span) // size))
        by_lane: list[list[DueDeadline]] = [[] for _ in range(count)]
        for deadline in span:
            by_lane[lane_of(deadline, count)].append(deadline)
        parts = [chunk for lane in by_lane for chunk in _even_chunks(lane, size)]
        groups += sorted(parts, key=lambda group: group[-1].due_at)
    return groups


def lane_of(deadline: DueDeadline, lanes: int) -> int:
    """A merchant's lane: a stable hash (Python's `hash` is salted per process), the order's
    when the clock has no merchant."""
    return zlib.crc32((deadline.merchant_id or deadline.order_id).encode()) % lanes


def _by_window(
    deadlines: Sequence[DueDeadline], window: timedelta, size: int
) -> list[list[DueDeadline]]:
    groups: list[list[DueDeadline]] = []
    for deadline in deadlines:
        current = groups[-1] if groups else None
        if current and len(current) < size and deadline.due_at - current[0].due_at <= window:
            current.append(deadline)
        else:
            groups.append([deadline])
    return groups


def _even_chunks(lane: list[DueDeadline], size: int) -> list[list[DueDeadline]]:
    """A lane in as few groups of at most `size` as it takes, of even length (not 200, 200, 3)."""
    if not lane:
        return []
    count = -(-len(lane) // size)
    step = -(-len(lane) // count)
    return [lane[start : start + step] for start in range(0, len(lane), step)]


def dispatch_once(uow: UnitOfWork, now: datetime, timers: TimerPolicy, publish: Publish) -> int:
    """One dispatcher pass: re-arm lost timers, claim what falls due within the horizon, send it.

    Messages are sent before the claim commits: if the commit fails, the rows stay pending and
    the next pass sends them again (the check task is idempotent); nothing is ever lost
    between a commit and a send.
    """
    with uow:
        requeued = uow.deadlines.requeue_stale(now - timers.redispatch_grace, now)
        claimed = uow.deadlines.claim(now + timers.horizon, timers.batch, now)
        for group in group_for_eta(claimed, timers.group_window, timers.group_size, timers.lanes):
            publish(group, group[-1].due_at)
        uow.commit()
    if requeued:
        log.warning("timers re-armed", count=requeued)
    return len(claimed)


def fire_due(
    deadlines: Iterable[DueDeadline],
    uow_factory: Callable[[], UnitOfWork],
    clock: Clock,
    policy: Policy,
    set_based: bool = False,
) -> tuple[int, list[DueDeadline]]:
    """Fire the deadlines whose time has come, each in its own savepoint, in one transaction.
    Returns how many fired and those that arrived early (to be sent again at their time).

    With `set_based` (SLATIMER_TIMER_SET_BASED) the group is first fired set-based
    (`uow.batch`: its orders locked and read at once); if a check fails after writing, or a
    write fails, that attempt is rolled back and the group is fired again deadline by
    deadline, each in a real savepoint."""
    deadlines = list(deadlines)
    if not set_based:
        with uow_factory() as uow:
            fired, early = _fire_all(deadlines, uow, clock, policy)
            uow.commit()
        return fired, early
    with uow_factory() as uow:
        try:
            orders, moments = [d.order_id for d in deadlines], [d.due_at for d in deadlines]
            graded = [d.order_id for d in deadlines if d.rule in VIOLATION_RULES]
            with uow.batch(orders, moments=moments, merchants_of=graded) as batched:
                fired, early = _fire_all(deadlines, batched, clock, policy)
        except (OperationalError, InterfaceError):
            raise  # the database is away: the whole task retries
        except Exception as error:
            log.warning("group fired again deadline by deadline", error=repr(error)[:500])
            fired, early = _fire_all(deadlines, uow, clock, policy)
        uow.commit()
    return fired, early


def _fire_all(
    deadlines: list[DueDeadline], uow: UnitOfWork, clock: Clock, policy: Policy
) -> tuple[int, list[DueDeadline]]:
    fired, early = 0, []
    for deadline in deadlines:
        now = clock.now()
        if deadline.due_at > now:
            early.append(deadline)
            continue
        fired += _fire_one(deadline, uow, now, policy)
    return fired, early


def _fire_one(deadline: DueDeadline, uow: UnitOfWork, now: datetime, policy: Policy) -> int:
    bound = log.bind(
        deadline_id=deadline.key,
        order_id=deadline.order_id,
        rule=deadline.rule,
        due_at=iso(deadline.due_at),
    )
    try:
        with uow.savepoint():
            outcomes = fire_deadline(deadline, uow, now, policy)
    except (OperationalError, InterfaceError, Unisolated):
        raise  # the database is away: the whole task retries; or the group is redone
    except Exception:  # a bug for one order must not block the rest; it is retried later
        bound.exception("deadline check failed")
        return 0
    lateness = (now - deadline.due_at).total_seconds()
    metrics.deadline_fired(deadline.rule, lateness)
    bound.info("deadline fired", lateness_s=round(lateness, 3), outcomes=len(outcomes))
    return 1


def encode_refs(deadlines: Iterable[DueDeadline]) -> list[list[str]]:
    """JSON-safe task arguments: [order_id, rule, subject, due_at] per deadline."""
    return [[d.order_id, d.rule, d.subject, iso(d.due_at)] for d in deadlines]


def decode_refs(refs: Iterable[Sequence[str]]) -> list[DueDeadline]:
    return [
        DueDeadline(order_id, rule, subject, datetime.fromisoformat(due_at.replace("Z", "+00:00")))
        for order_id, rule, subject, due_at in refs
    ]
