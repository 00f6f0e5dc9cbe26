"""B2: many pending deadlines. Bytes per pending deadline in PostgreSQL, the dispatcher's claim
query at growing table sizes, and the RSS of ingest, worker and dispatcher doing a little work
beside them (events ingested, deadlines fired) at a small and a large count."""

from __future__ import annotations

import statistics
import time
from datetime import UTC, datetime, timedelta

from bench import harness, load, traffic
from bench.b1_ingest import _queue
from config.policy import load_policy
from config.settings import DEFAULT_POLICY
from store.sql.engine import session_factory
from store.sql.unit_of_work import SqlUnitOfWork

WORK = 1000
"""Events ingested and deadlines fired while RSS is sampled."""


def claim_ms(stage: harness.Stage, repeat: int = 15) -> float:
    """Median time of the dispatcher's claim (store.sql.repositories.SqlDeadlines.claim, 1,000
    rows due within the 300 s horizon), rolled back each time."""
    sessions = session_factory(stage.engine)
    times = []
    for _ in range(repeat):
        with SqlUnitOfWork(sessions) as uow:
            now = datetime.now(UTC)
            began = time.perf_counter()
            claimed = uow.deadlines.claim(now + timedelta(seconds=300), 1000, now)
            times.append(1000 * (time.perf_counter() - began))
            uow.rollback()
    assert claimed, "nothing due to claim"
    return statistics.median(times)


def bytes_per_deadline(stage: harness.Stage) -> tuple[int, float, float]:
    ((count, deadlines, orders),) = stage.sql(
        "SELECT (SELECT count(*) FROM deadlines WHERE state = 'pending'), "
        "pg_total_relation_size('deadlines'), pg_total_relation_size('orders')"
    )
    return int(count), deadlines / count, orders / count


def rss_under_work(stage: harness.Stage, label: str, lead: float) -> dict[str, float]:
    """Start the three processes, ingest WORK events and fire WORK deadlines; max RSS (MiB)
    of each role's largest process over the run."""
    template = load.template(load_policy(DEFAULT_POLICY))
    peak = {"ingest": 0.0, "worker": 0.0, "dispatcher": 0.0}
    with harness.processes(stage.env, stage.logs) as children:
        started = {role: children.start(role, f"{role}-{label}") for role in peak}
        due = datetime.now(UTC) + timedelta(seconds=lead)
        load.load_orders(stage.dsn, template, f"f{label}-", WORK, due, timedelta(seconds=2),
                         "collection")  # fmt: skip
        _queue(stage, WORK, label)

        def done() -> bool:
            for role, process in started.items():
                pids = harness.descendants(process.pid)
                peak[role] = max(peak[role], max(harness.rss_mb(pid) for pid in pids))
            ((fired,),) = stage.sql(
                "SELECT count(*) FROM outcomes WHERE kind = 'violation' AND order_id LIKE %s",
                (f"f{label}-%",),
            )
            return fired >= WORK and stage.redis().llen(stage.env["SLATIMER_ORDER_QUEUE"]) == 0

        harness.wait_until(done, 300, every=0.5)
    return peak


def run(count: int, big: int, lead: float) -> list:

    template = load.template(load_policy(DEFAULT_POLICY))
    with harness.stage("b2") as stage:
        soon = datetime.now(UTC) + timedelta(seconds=120)
        load.load_orders(stage.dsn, template, "soon-", 1000, soon, timedelta(seconds=60),
                         "collection")  # fmt: skip
        claim_small = claim_ms(stage)
        rss_small = rss_under_work(stage, "s", lead)
        later = datetime.now(UTC) + timedelta(hours=30)  # warnings (24 h, 6 h before) too
        orders = count // len(template.deadlines)
        load.load_orders(stage.dsn, template, "p-", orders, later, timedelta(hours=24))
        load.load_orders(stage.dsn, template, "soon2-", 1000, soon, timedelta(seconds=60),
                         "collection")  # fmt: skip
        pending, per_deadline, per_order_row = bytes_per_deadline(stage)
        claim_mid = claim_ms(stage)
        rss_big = rss_under_work(stage, "b", lead)
        load.load_bare_deadlines(stage.dsn, "bare-", big - pending, later)
        load.load_orders(stage.dsn, template, "soon3-", 1000, datetime.now(UTC) + timedelta(
            seconds=120), timedelta(seconds=60), "collection")  # fmt: skip
        big_pending, per_big, _ = bytes_per_deadline(stage)
        claim_big = claim_ms(stage)
    return [pending, per_deadline, per_order_row, claim_small, claim_mid, claim_big,
            big_pending, per_big, rss_small, rss_big]  # fmt: skip


__all__ = ["run", "traffic"]
