"""Helpers for end-to-end tests on real processes: environment, child processes, waiting."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, select

from store.sql.tables import OutcomeRow, RetractionRow

FAST_POLICY = Path(__file__).parent / "policies" / "fast.toml"


def runtime_env(database_url: str, broker_url: str, **overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLATIMER_")}
    env.update(
        SLATIMER_DATABASE_URL=database_url,
        SLATIMER_BROKER_URL=broker_url,
        SLATIMER_POLICY_FILE=str(FAST_POLICY),
        SLATIMER_TIMER_HORIZON="3",
        SLATIMER_DISPATCH_INTERVAL="0.1",
        SLATIMER_TIMER_GROUP_WINDOW="0.02",
        SLATIMER_REDISPATCH_GRACE="3",
        SLATIMER_LOG_LEVEL="INFO",
        SLATIMER_INGEST_BATCH_WAIT="0.05",
    )
    env.update(overrides)
    return env


class Processes:
    """Child processes started by a test, with their logs kept for the failure report."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env = env
        self.log_dir = log_dir
        self.running: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, role: str, name: str | None = None, *args: str) -> subprocess.Popen[bytes]:
        name = name or role
        log = (self.log_dir / f"{name}.log").open("ab")
        process = subprocess.Popen(
            [sys.executable, "-m", "worker", role, *args],
            env=self.env_for(role),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.running[name] = process
        return process

    def env_for(self, role: str) -> dict[str, str]:
        return self.env

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        process = self.running.pop(name)
        process.send_signal(sig)
        process.wait(timeout=30)

    def stop_all(self) -> None:
        for name in list(self.running):
            self.kill(name, signal.SIGTERM if name != "worker" else signal.SIGKILL)

    def wait_ready(self, *names: str, timeout: float = 90) -> None:
        """Wait until each named child says it is consuming (its log's ready line): a test
        whose first deadlines fall due a second after its start must not race the start-up of
        a Celery worker on two loaded cores."""
        for name in names:
            marker = READY_MARKERS[name.split("-")[0]]
            log = self.log_dir / f"{name}.log"
            wait_for(
                _says(log, marker),
                timeout,
                f"{name} to be ready",
                every=0.1,
            )

    def logs(self) -> str:
        return "\n".join(
            f"--- {path.name}\n{path.read_text(errors='replace')[-4000:]}"
            for path in sorted(self.log_dir.glob("*.log"))
        )


def _says(log: Path, marker: str) -> Callable[[], bool]:
    return lambda: log.exists() and marker in log.read_text(errors="replace")


READY_MARKERS = {
    "worker": " ready.",  # Celery's "celery@host ready."
    "ingest": '"consuming"',
    "dispatcher": '"dispatcher started"',
}


@contextmanager
def processes(env: dict[str, str], log_dir: Path) -> Iterator[Processes]:
    children = Processes(env, log_dir)
    try:
        yield children
    finally:
        children.stop_all()


def wait_for(condition: Callable[[], bool], timeout: float, what: str, every: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def recorded_outcomes(engine: Engine) -> list[dict[str, Any]]:
    """The store's outcomes in replay's shape: violations/escalations, and retractions."""
    with engine.connect() as connection:
        rows = connection.execute(select(OutcomeRow)).mappings().all()
        retractions = connection.execute(
            select(
                RetractionRow.order_id, RetractionRow.rule, OutcomeRow.points, OutcomeRow.subject
            ).join(OutcomeRow, OutcomeRow.id == RetractionRow.outcome_id)
        ).all()
    found = [
        {
            "kind": row["kind"],
            "rule": row["rule"],
            "order_id": row["order_id"],
            "at": row["at"],
            "severity": row["severity"],
            "points": row["points"],
            "subject": row["subject"] or None,
        }
        for row in rows
    ]
    found += [
        {
            "kind": "retraction",
            "rule": rule,
            "order_id": order_id,
            "at": None,
            "severity": None,
            "points": -points if points else None,
            "subject": subject or None,
        }
        for order_id, rule, points, subject in retractions
    ]
    return sorted(found, key=_key)


def comparable(outcomes: list[Any]) -> list[dict[str, Any]]:
    """Replay's outcomes in the same shape (a retraction's `at` is when it was learnt, which
    differs between a virtual and a real clock, so it is left out of the comparison)."""
    shaped = [
        {
            "kind": o.kind,
            "rule": o.rule,
            "order_id": o.order_id,
            "at": None if o.kind == "retraction" else o.at,
            "severity": None if o.kind == "retraction" else o.severity,
            "points": o.points,
            "subject": o.subject or None,
        }
        for o in outcomes
    ]
    return sorted(shaped, key=_key)


def _key(outcome: dict[str, Any]) -> tuple[str, ...]:
    return tuple(str(outcome[k]) for k in ("order_id", "kind", "rule", "subject", "at"))
