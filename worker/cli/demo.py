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
from sqlalchemy import Engine, create_engine, func, select, text
from sqlalchemy.exc import OperationalError

from config.policy import load_policy
from config.settings import DEMO_POLICY, Settings
from models.events import parse_event
from models.outcomes import iso
from store.memory import MemoryUnitOfWork
from store.sql.engine import make_engine
from store.sql.migrate import upgrade
from store.sql.outbox import outbox
from store.sql.tables import (
    AlertRow,
    DeadlineRow,
    InboxRow,
    LedgerRow,
    OutcomeRow,
    RetractionRow,
)
from worker.cli.demo_receiver import ALLOW_LOOPBACK, Receiver
from worker.console.server import start_console
from worker.process.supervisor import Supervisor
from worker.service.replay import ReplayResult, replay_lines

HOUR_IN_DEMO = timedelta(seconds=0.5)
"""The demo policy's scale: one hour of the rules passes in half a second."""
SCALE = HOUR_IN_DEMO / timedelta(hours=1)
LEAD_IN = timedelta(seconds=6)
SPAN = timedelta(hours=200)
"""How much of the log the demo streams: the sales day and the 120 h (and 168 h special-goods)
deadlines that follow, 100 s of wall time; the last deliveries are left out."""


def demo_env(workdir: Path) -> dict[str, str]:
    return {
        "SLATIMER_DATABASE_URL": database_url(workdir),
        "SLATIMER_BROKER_URL": f"sqla+sqlite:///{workdir / 'broker.db'}",
        "SLATIMER_POLICY_FILE": str(DEMO_POLICY),
        "SLATIMER_TIMER_HORIZON": "10",
        "SLATIMER_DISPATCH_INTERVAL": "0.2",
        "SLATIMER_REDISPATCH_GRACE": "20",
        "SLATIMER_INGEST_BATCH_WAIT": "0.1",
        "SLATIMER_LOG_LEVEL": "WARNING",
        "SLATIMER_WEBHOOK_ALLOW": ALLOW_LOOPBACK,
    }


def database_url(workdir: Path) -> str:
    return f"sqlite:///{workdir / 'slatimer.db'}"


def demo_stream(lines: list[bytes]) -> list[bytes]:
    """The part of the log the demo streams, and `--replay-only` replays: every event up to
    SPAN after the first one, in the log's order."""
    documents = [(line, orjson.loads(line)) for line in lines if line.strip()]
    origin = min(_time(d["occurred_at"]) for _line, d in documents)
    return [line for line, d in documents if _time(d["occurred_at"]) <= origin + SPAN]


def stream_end(lines: list[bytes]) -> datetime:
    """Where a replay of the demo stream stops: an hour of the rules after its last event
    (the live demo's end, at its own scale)."""
    return max(_time(orjson.loads(line)["occurred_at"]) for line in lines) + timedelta(hours=1)


def compress(lines: list[bytes], start: datetime) -> list[tuple[datetime, bytes]]:
    """Shift the demo stream to begin at `start` and scale its times by SCALE: (send at, body)."""
    documents = [orjson.loads(line) for line in demo_stream(lines)]
    origin = min(_time(d["occurred_at"]) for d in documents)

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


def run_demo(example: Path, out: Any = print, data_dir: Path | None = None) -> bool:
    """Run the demo; returns whether the runtime's outcomes matched replay's. Its data stays in
    `data_dir` (default: a new temporary folder) for the user to explore afterwards."""
    from worker.ingest.consumer import connect, publish_events

    lines = example.read_bytes().splitlines()  # before anything is made: the path may be wrong
    workdir = _workdir(data_dir)
    env = demo_env(workdir)
    settings = Settings.model_validate(
        {k.removeprefix("SLATIMER_").lower(): v for k, v in env.items()}
    )
    engine = make_engine(settings.database_url)
    upgrade(engine)
    receiver = Receiver(_merchants(demo_stream(lines)), out)
    _register_endpoints(engine, receiver)
    log_path = workdir / "runtime.log"
    out(f"slatimer demo: ingest + Celery worker + dispatcher on embedded defaults in {workdir}")
    out(f"  (their logs: {log_path}); waiting for them to start")
    start_console(engine, settings, out)  # up while the demo runs (a daemon thread)
    log_file = log_path.open("ab")
    supervisor = Supervisor(env={**_inherited_env(), **env}, output=log_file)
    runner = threading.Thread(target=supervisor.run, daemon=True)
    receiver.start()
    runner.start()
    try:
        _wait_until_consuming(settings, (settings.order_queue, settings.alert_queue))
        sends = arrival_order(lines, compress(lines, datetime.now(UTC) + LEAD_IN))
        bodies = [body for _at, body in sends]
        end = sends[-1][0] + HOUR_IN_DEMO
        out(f"  streaming {len(sends)} events of a sales day and its week; one hour of the rules")
        out("  = 0.5 s: 24 h review = 12 s, 48 h contact = 24 s, 120 h = 60 s; alerts go, signed,")
        out(f"  to the demo's own webhook receiver at {receiver.url('<merchant>')}\n")
        watcher = threading.Thread(target=_watch, args=(engine, end, out), daemon=True)
        watcher.start()
        with connect(settings, settings.broker_url) as connection:
            for send_at, body in sends:
                time.sleep(max(0.0, (send_at - datetime.now(UTC)).total_seconds()))
                publish_events(connection, [body], settings)
        _wait_until_settled(engine, end, expected_events=_distinct_events(bodies))
        watcher.join(timeout=5)
        _wait_for_alerts(engine)
    finally:
        supervisor.stop.set()
        runner.join(timeout=60)
        receiver.stop()
        log_file.close()
    matches = _summarise(engine, bodies, end, out)
    out(receiver.tally())
    out(f"\nthe demo's data stays in {workdir}; explore it with, e.g.:")
    out(f"  SLATIMER_DATABASE_URL={settings.database_url} slatimer merchant coastal")
    return matches


def _workdir(data_dir: Path | None) -> Path:
    """The demo's folder: a fresh temporary one, or `data_dir` (made if need be)."""
    if data_dir is None:
        return Path(tempfile.mkdtemp(prefix="slatimer-demo-"))
    data_dir.mkdir(parents=True, exist_ok=True)
    return data_dir.resolve()


def _wait_until_consuming(
    settings: Settings, queues: tuple[str, ...], patience: float = 120
) -> None:
    """Until ingest and the Celery worker have declared their queues on the embedded broker:
    they are up. The schedule starts only then, so a slow start (a busy machine) does not
    make events arrive after the clocks they stop."""
    broker = create_engine(settings.broker_url.removeprefix("sqla+"))
    give_up = time.monotonic() + patience
    try:
        while time.monotonic() < give_up:
            if set(queues) <= _declared(broker):
                return
            time.sleep(0.5)
    finally:
        broker.dispose()
    raise TimeoutError(f"the runtime did not start within {patience:.0f} s")


def _declared(broker: Engine) -> set[str]:
    try:
        with broker.connect() as connection:
            return set(connection.execute(text("SELECT name FROM kombu_queue")).scalars())
    except OperationalError:  # no table yet: nothing has declared a queue
        return set()


def _merchants(bodies: list[bytes]) -> list[str]:
    found = (orjson.loads(body).get("merchant_id") for body in bodies)
    return sorted({merchant for merchant in found if merchant})


def _register_endpoints(engine: Engine, receiver: Receiver) -> None:
    with outbox(engine) as box:
        for merchant, secret in receiver.secrets.items():
            box.save_endpoint(merchant, receiver.url(merchant), secret)


def _wait_for_alerts(engine: Engine, patience: float = 20) -> None:
    """Until the outbox has nothing left to send (bounded: a failed attempt waits its retry)."""
    give_up = time.monotonic() + patience
    while time.monotonic() < give_up:
        with engine.connect() as connection:
            pending = connection.scalar(
                select(func.count()).select_from(AlertRow).where(AlertRow.state == "pending")
            )
        if not pending:
            return
        time.sleep(0.5)


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
    """Outcomes and points per merchant from the store, checked against replay of the same
    stream up to the same moment (clocks due after the end may have fired before the runtime
    stopped: they are left out of both)."""
    with engine.connect() as connection:
        standing = connection.execute(
            select(OutcomeRow.merchant_id, OutcomeRow.kind, func.count())
            .where(OutcomeRow.retracted.is_(False), OutcomeRow.at <= end)
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
    stored = {m: int(p) for m, p in points.items() if p}
    out("\n" + "\n".join(summary_table(counts, stored)))
    replayed = replay_demo(bodies, end)[0].points_by_merchant()
    matches = replayed == stored
    out(f"\nsame points as `slatimer replay` of the same stream: {'yes' if matches else 'NO'}")
    if not matches:
        out(f"  replay says {replayed}")
    return matches


def summary_table(counts: dict[str, dict[str, int]], points: dict[str, int]) -> list[str]:
    """The demo's closing table: standing outcomes by kind and points, per merchant."""
    lines = [
        f"{'merchant':<12} {'warnings':>8} {'violations':>10} {'escalations':>11} {'points':>6}"
    ]
    for merchant in sorted(counts):
        row = counts[merchant]
        lines.append(
            f"{merchant:<12} {row.get('warning', 0):>8} {row.get('violation', 0):>10} "
            f"{row.get('escalation', 0):>11} {points.get(merchant, 0):>6}"
        )
    return lines


def replay_demo(bodies: list[bytes], end: datetime) -> tuple[ReplayResult, MemoryUnitOfWork]:
    """Replay of the stream the demo sent, under the demo policy, on the memory store."""
    uow = MemoryUnitOfWork()
    return replay_lines(bodies, load_policy(DEMO_POLICY), until=end, uow=uow), uow


def replayed_summary(example: Path, start: datetime) -> list[str]:
    """The table the demo prints at its end, as replay of its stream computes it."""
    lines = example.read_bytes().splitlines()
    sends = arrival_order(lines, compress(lines, start))
    result, uow = replay_demo([body for _at, body in sends], sends[-1][0] + HOUR_IN_DEMO)
    counts: dict[str, dict[str, int]] = {}
    for order_id, recorded in uow.outcomes.by_order.items():
        merchant = uow.outcomes.merchant_of.get(order_id) or "?"
        for outcome in recorded.values():
            if not outcome.retracted:
                kinds = counts.setdefault(merchant, {})
                kinds[outcome.kind] = kinds.get(outcome.kind, 0) + 1
    return summary_table(counts, result.points_by_merchant())
