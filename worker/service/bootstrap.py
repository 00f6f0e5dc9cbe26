"""The composition root: builds slatimer's dependencies from settings. Nothing connects to a
server at import time; each process calls `bootstrap()` once and passes what it needs along."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import structlog
from sqlalchemy import Engine

from config.policy import PolicyError, load_policies
from config.settings import Settings
from models.policy import Policy
from store.base import UnitOfWork
from store.sql.engine import make_engine, session_factory
from store.sql.unit_of_work import SqlUnitOfWork
from worker.process.logs import configure_logging

log = structlog.get_logger("slatimer.bootstrap")


class SystemClock:
    """The real clock, for the runtime only; the core never calls it directly."""

    def now(self) -> datetime:
        return datetime.now(UTC)


class PolicyFiles:
    """The policy files, read again when one changes: a new rule version (4.2) takes effect
    without a code change or a restart. A file that no longer loads keeps the last good
    version in force (and says so in the log)."""

    def __init__(self, paths: list[Path], check_every: float = 5.0) -> None:
        self.paths = paths
        self.check_every = check_every
        self._stamp: tuple[int, ...] | None = None
        self._policy = load_policies(paths)
        self._stamp = self._mtimes()
        self._checked = time.monotonic()

    def current(self) -> Policy:
        if time.monotonic() - self._checked >= self.check_every:
            self._checked = time.monotonic()
            self._reload_if_changed()
        return self._policy

    def _mtimes(self) -> tuple[int, ...]:
        return tuple(path.stat().st_mtime_ns for path in self.paths)

    def _reload_if_changed(self) -> None:
        try:
            stamp = self._mtimes()
            if stamp != self._stamp:
                self._policy, self._stamp = load_policies(self.paths), stamp
                log.info(
                    "policy loaded", name=self._policy.name, files=[str(p) for p in self.paths]
                )
        except (OSError, PolicyError) as error:
            log.error("policy reload failed; keeping the version in force", error=str(error))


@dataclass
class App:
    settings: Settings
    policies: Callable[[], Policy]
    engine: Engine
    uow: Callable[[], UnitOfWork]
    clock: SystemClock

    @property
    def policy(self) -> Policy:
        """The rules in force now (re-read from the policy files when they change)."""
        return self.policies()


def bootstrap(settings: Settings | None = None, policy: Policy | None = None) -> App:
    settings = settings or Settings()
    configure_logging(settings.log_level, settings.log_json)
    engine = make_engine(settings.database_url)
    sessions = session_factory(engine)
    if policy is None:
        files = PolicyFiles([settings.policy_file, *settings.policy_history])
        policies: Callable[[], Policy] = files.current
    else:
        policies = lambda: policy  # noqa: E731 - a fixed policy, for tests and tools
    return App(
        settings=settings,
        policies=policies,
        engine=engine,
        uow=lambda: SqlUnitOfWork(sessions),
        clock=SystemClock(),
    )
