"""The composition root: builds slatimer's dependencies from settings. Nothing connects to a
server at import time; each process calls `bootstrap()` once and passes what it needs along."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Engine

from config.policy import load_policies
from config.settings import Settings
from models.policy import Policy
from store.base import UnitOfWork
from store.sql import SqlUnitOfWork, make_engine, session_factory
from worker.logs import configure_logging


class SystemClock:
    """The real clock, for the runtime only; the core never calls it directly."""

    def now(self) -> datetime:
        return datetime.now(UTC)


@dataclass
class App:
    settings: Settings
    policy: Policy
    engine: Engine
    uow: Callable[[], UnitOfWork]
    clock: SystemClock


def bootstrap(settings: Settings | None = None, policy: Policy | None = None) -> App:
    settings = settings or Settings()
    configure_logging(settings.log_level, settings.log_json)
    engine = make_engine(settings.database_url)
    sessions = session_factory(engine)
    return App(
        settings=settings,
        policy=policy or load_policies([settings.policy_file, *settings.policy_history]),
        engine=engine,
        uow=lambda: SqlUnitOfWork(sessions),
        clock=SystemClock(),
    )
