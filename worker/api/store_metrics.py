"""Gauges computed from the database at scrape time, served by the read API's /metrics.

The database is the truth for what is open, recorded, parked or refused, so these are read from
it rather than counted by processes: right with any number of replicas, after restarts, and after
`dlq replay`. Each scrape runs a handful of aggregate queries (the open-deadline ones use the
partial indexes on due_at); scrape every 30 s or slower.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import structlog
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import Connection, Engine, func, select

from store.sql.tables import AlertRow, DeadLetterRow, DeadlineRow, OutcomeRow

log = structlog.get_logger("slatimer.metrics")

OPEN_STATES = ("pending", "enqueued")
ALERT_STATES = ("pending", "delivered", "failed", "disabled")


class StoreCollector(Collector):
    """A custom collector: one read-only connection per scrape, nothing cached between them."""

    def __init__(self, engine: Engine, now: Callable[[], datetime] | None = None) -> None:
        self.engine = engine
        self.now = now or (lambda: datetime.now(UTC))

    def collect(self) -> Iterator[GaugeMetricFamily]:
        up = GaugeMetricFamily("slatimer_store_up", "1 if the last scrape could read the store.")
        try:
            with self.engine.connect() as connection:
                families = list(self._families(connection))
        except Exception as error:  # noqa: BLE001 - a scrape must answer even when the DB is away
            log.error("store metrics unavailable", error=str(error)[:500])
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families

    def _families(self, connection: Connection) -> Iterator[GaugeMetricFamily]:
        yield deadlines_open(connection)
        yield overdue_seconds(connection, self.now())
        yield outcomes(connection)
        yield alerts(connection)
        yield dlq_depth(connection)


def deadlines_open(connection: Connection) -> GaugeMetricFamily:
    family = GaugeMetricFamily(
        "slatimer_deadlines_open",
        "Deadlines not yet fired or met, by rule and state (pending; enqueued = a timer holds it).",
        labels=["rule", "state"],
    )
    query = (
        select(DeadlineRow.rule, DeadlineRow.state, func.count())
        .where(DeadlineRow.state.in_(OPEN_STATES))
        .group_by(DeadlineRow.rule, DeadlineRow.state)
        .order_by(DeadlineRow.rule, DeadlineRow.state)
    )
    for rule, state, count in connection.execute(query):
        family.add_metric([rule, state], count)
    return family


def overdue_seconds(connection: Connection, now: datetime) -> GaugeMetricFamily:
    """How far past due the oldest open deadline is (0 if none is): timers are not firing."""
    family = GaugeMetricFamily(
        "slatimer_deadlines_overdue_max_seconds",
        "Now minus the due time of the oldest deadline still open, by state; 0 if none is due.",
        labels=["state"],
    )
    for state in OPEN_STATES:
        oldest = connection.scalar(
            select(func.min(DeadlineRow.due_at)).where(DeadlineRow.state == state)
        )
        family.add_metric([state], _seconds_past(oldest, now))
    return family


def _seconds_past(moment: datetime | None, now: datetime) -> float:
    if moment is None:
        return 0.0
    if moment.tzinfo is None:  # aggregates bypass the column type on SQLite
        moment = moment.replace(tzinfo=UTC)
    return max((now - moment).total_seconds(), 0.0)


def outcomes(connection: Connection) -> GaugeMetricFamily:
    family = GaugeMetricFamily(
        "slatimer_outcomes",
        "Violations and escalations recorded, by kind, rule and whether withdrawn since.",
        labels=["kind", "rule", "retracted"],
    )
    query = (
        select(OutcomeRow.kind, OutcomeRow.rule, OutcomeRow.retracted, func.count())
        .group_by(OutcomeRow.kind, OutcomeRow.rule, OutcomeRow.retracted)
        .order_by(OutcomeRow.kind, OutcomeRow.rule, OutcomeRow.retracted)
    )
    for kind, rule, retracted, count in connection.execute(query):
        family.add_metric([kind, rule, "true" if retracted else "false"], count)
    return family


def alerts(connection: Connection) -> GaugeMetricFamily:
    """Every state is exported, 0 included, so `increase()` and absent-series alerts work."""
    family = GaugeMetricFamily(
        "slatimer_alerts", "Merchant alerts in the outbox, by delivery state.", labels=["state"]
    )
    query = select(AlertRow.state, func.count()).group_by(AlertRow.state)
    counts: dict[str, int] = {state: count for state, count in connection.execute(query)}
    for state in sorted(set(ALERT_STATES) | set(counts)):
        family.add_metric([state], counts.get(state, 0))
    return family


def dlq_depth(connection: Connection) -> GaugeMetricFamily:
    family = GaugeMetricFamily(
        "slatimer_dlq_depth", "Dead letters not replayed yet (`slatimer dlq list`)."
    )
    query = (
        select(func.count()).select_from(DeadLetterRow).where(DeadLetterRow.replayed_at.is_(None))
    )
    family.add_metric([], connection.scalar(query) or 0)
    return family
