"""`slatimer demo`: the real runtime on embedded defaults, watched for about two minutes.

It starts ingest, a Celery worker and the dispatcher (SQLite store, kombu's SQLAlchemy transport:
no server needed), then publishes the bundled sales day (examples/day-of-orders.jsonl) to the
order queue in compressed time under the demo policy — an hour of the rules is half a second —
so the 24 h / 48 h / 120 h clocks fire as real Celery ETA tasks while you watch. At the end it
prints violations and points per merchant and checks them against `slatimer replay`.
"""

from __future__ import annotations

import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import Engine, func, select

from config.policy import load_policy
from config.settings import DEMO_POLICY, Settings
from models.events import parse_event
from models.outcomes import iso
from store.sql.engine import make_engine
from store.sql.migrate import upgrade
from store.sql.tables import DeadlineRow, InboxRow, LedgerRow, OutcomeRow, RetractionRow
from worker.console.server import start_console
from worker.process.supervisor import Supervisor
from worker.service.replay import replay_lines

HOUR_IN_DEMO = timedelta(seconds=0.5)
"""The demo policy's scale: one hour of the rules passes in half a second."""
SCALE = HOUR_IN_DEMO / timedelta(hours=1)
LEAD_IN = timedelta(seconds=6)
SPAN = timedelta(hours=200)
"""How much of the log the demo streams: the sales day and the 120 h (and 168 h special-goods)
deadlines that follow, 100 s of wall time; the last deliveries are left out."""


def demo_env(workdir: Path) -> dict[str, str]:
    return {
        "SLATIMER_DATABASE_URL": f"sqlite:///{workdir / 'slatimer.db'}",
        "SLATIMER_BROKER_URL": f"sqla+sqlite:///{workdir / 'broker.db'}",
        "SLATIMER_POLICY_FILE": str(DEMO_POLICY),
        "SLATIMER_TIMER_HORIZON": "10",
        "SLATIMER_DISPATCH_INTERVAL": "0.2",
        "SLATIMER_REDISPATCH_GRACE": "20",
        "SLATIMER_INGEST_BATCH_WAIT": "0.1",
        "SLATIMER_LOG_LEVEL": "WARNING",
    }


def compress(lines: list[bytes], start: datetime) -> list[tuple[datetime, bytes]]:
    """Shift the log to begin at `start` and scale its times by SCALE: (send at, body)."""
    documents = [orjson.loads(line) for line in lines if line.strip()]
    origin = min(_time(d["occurred_at"]) for d in documents)
    documents = [d for d in documents if _time(d["occurred_at"]) <= origin + SPAN]

    def moved(value: str) -> datetime:
        return start + (_time(value) - origin) * SCALE

    sends = []
    for document in documents:
        occurred = moved(document["occurred_at"])
        document["occurred_at"] = iso(occurred)
        if document.get("new_ship_by"):
            document["new_ship_by"] = iso(moved(document["new_ship_by"]))
        sends.append((occurred, orjson.dumps(document)))
    return sends


def arrival_order(
    lines: list[bytes], sends: list[tuple[datetime, bytes]]
) -> list[tuple[datetime, bytes]]:
    """Publish in the log's own order (a late scan stays late), each no earlier than the
    latest event time before it: exactly the clock progression replay uses."""
    paced, clock = [], datetime.min.replace(tzinfo=UTC)
    for occurred, body in sends:
        clock = max(clock, occurred)
        paced.append((clock, body))
    return paced


def _time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def run_demo(example: Path, out: Any = print) -> bool:
    """Run the demo; returns whether the runtime's outcomes matched replay's."""
    from worker.ingest.consumer import connect, publish_events

    workdir = Path(tempfile.mkdtemp(prefix="slatimer-demo-"))
    env = demo_env(workdir)
    settings = Settings.model_validate(
        {k.removeprefix("SLATIMER_").lower(): v for k, v in env.items()}
    )
    engine = make_engine(settings.database_url)
    upgrade(engine)
    lines = example.read_bytes().splitlines()
    sends = arrival_order(lines, compress(lines, datetime.now(UTC) + LEAD_IN))
    end = sends[-1][0] + HOUR_IN_DEMO
    log_path = workdir / "runtime.log"
    out(f"slatimer demo: ingest + Celery worker + dispatcher on embedded defaults in {workdir}")
    out(f"  (their logs: {log_path}); streaming {len(sends)} events of a sales day and its week")
    start_console(engine, settings, out)  # up while the demo runs (a daemon thread)
    out("  one hour of the rules = 0.5 s: 24 h review = 12 s, 48 h contact = 24 s, 120 h = 60 s\n")
    log_file = log_path.open("ab")
    supervisor = Supervisor(env={**_inherited_env(), **env}, output=log_file)
    runner = threading.Thread(target=supervisor.run, daemon=True)
    runner.start()
    try:
        watcher = threading.Thread(target=_watch, args=(engine, end, out), daemon=True)
        watcher.start()
        with connect(settings, settings.broker_url) as connection:
            for send_at, body in sends:
                time.sleep(max(0.0, (send_at - datetime.now(UTC)).total_seconds()))
                publish_events(connection, [body], settings)
        bodies = [body for _at, body in sends]
        _wait_until_settled(engine, end, expected_events=_distinct_events(bodies))
        watcher.join(timeout=5)
    finally:
        supervisor.stop.set()
        runner.join(timeout=60)
        log_file.close()
    return _summarise(engine, [body for _at, body in sends], end, out)


def _inherited_env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith("SLATIMER_")}


def _distinct_events(lines: list[bytes]) -> int:
    return len({parse_event(line).event_id for line in lines if line.strip()})


def _wait_until_settled(engine: Engine, end: datetime, expected_events: int) -> None:
    """Until every event is in and every clock due by the end has fired (bounded)."""
    give_up = time.monotonic() + 120
    while time.monotonic() < give_up:
        with engine.connect() as connection:
            inbox = connection.scalar(select(func.count()).select_from(InboxRow)) or 0
            open_clocks = connection.scalar(
                select(func.count())
                .select_from(DeadlineRow)
                .where(DeadlineRow.state.in_(("pending", "enqueued")), DeadlineRow.due_at <= end)
            )
        if inbox >= expected_events and not open_clocks and datetime.now(UTC) > end:
            return
        time.sleep(0.5)
    raise TimeoutError("the demo did not settle within two minutes of its end")


def _watch(engine: Engine, end: datetime, out: Any) -> None:
    """Print each outcome and retraction as the runtime records it."""
    cursors = {"outcome": 0, "retraction": 0}
    started = time.monotonic()
    while datetime.now(UTC) < end + timedelta(seconds=15):
        for line in _new_lines(engine, cursors):
            out(f"  {time.monotonic() - started:6.1f} s  {line}")
        time.sleep(0.5)


def _new_lines(engine: Engine, cursors: dict[str, int]) -> list[str]:
    with engine.connect() as connection:
        outcomes = connection.execute(
            select(OutcomeRow).where(OutcomeRow.id > cursors["outcome"]).order_by(OutcomeRow.id)
        ).all()
        retractions = connection.execute(
            select(RetractionRow.id, RetractionRow.rule, RetractionRow.order_id)
            .where(RetractionRow.id > cursors["retraction"])
            .order_by(RetractionRow.id)
        ).all()
    lines = []
    for row in outcomes:
        cursors["outcome"] = row.id
        points = "" if row.points is None else f"{row.points:+d} pts"
        lines.append(
            f"{row.kind:<10} {row.rule:<31} {row.order_id:<9} {row.merchant_id or '':<11} "
            f"clause {row.clause:<17} {points}"
        )
    for retraction_id, rule, order_id in retractions:
        cursors["retraction"] = retraction_id
        lines.append(f"{'retraction':<10} {rule:<31} {order_id:<9} (late evidence)")
    return lines


def _summarise(engine: Engine, bodies: list[bytes], end: datetime, out: Any) -> bool:
    """Points per merchant from the store, checked against replay of the same stream up to the
    same moment (clocks due after the end may have fired before the runtime stopped)."""
    with engine.connect() as connection:
        standing = connection.execute(
            select(OutcomeRow.merchant_id, OutcomeRow.kind, func.count())
            .where(OutcomeRow.retracted.is_(False))
            .group_by(OutcomeRow.merchant_id, OutcomeRow.kind)
        ).all()
        points = dict(
            connection.execute(
                select(LedgerRow.merchant_id, func.sum(LedgerRow.points))
                .where(LedgerRow.at <= end)
                .group_by(LedgerRow.merchant_id)
            ).all()
        )
    counts: dict[str, dict[str, int]] = {}
    for merchant, kind, count in standing:
        counts.setdefault(merchant or "?", {})[kind] = count
    out(f"\n{'merchant':<12} {'warnings':>8} {'violations':>10} {'escalations':>11} {'points':>6}")
    for merchant in sorted(counts):
        row = counts[merchant]
        out(
            f"{merchant:<12} {row.get('warning', 0):>8} {row.get('violation', 0):>10} "
            f"{row.get('escalation', 0):>11} {int(points.get(merchant, 0)):>6}"
        )
    replayed = replay_lines(bodies, load_policy(DEMO_POLICY), until=end).points_by_merchant()
    matches = replayed == {m: int(p) for m, p in points.items() if p}
    out(f"\nsame points as `slatimer replay` of the same stream: {'yes' if matches else 'NO'}")
    if not matches:
        out(f"  replay says {replayed}")
    return matches
