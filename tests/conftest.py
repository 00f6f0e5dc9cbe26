"""Shared fixtures. Servers: a test that needs one skips locally when it is down, but fails in
CI (CI=true), where a missing server is a broken environment, not a reason to skip."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
from sqlalchemy import Engine, text

from config.policy import load_policy
from config.settings import DEFAULT_POLICY
from models.events import Event
from models.policy import Policy
from store.sql.engine import make_engine, session_factory
from store.sql.migrate import upgrade
from store.sql.unit_of_work import SqlUnitOfWork
from tests.builders import T0, H, collected, created
from worker.api.keys import issue_key
from worker.service.replay import Replayer

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
PG_URL = os.environ.get(
    "SLATIMER_TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


def server_missing(what: str, error: Exception) -> None:
    if IN_CI:
        raise RuntimeError(f"{what} is required in CI but unreachable: {error}") from error
    pytest.skip(f"{what} unreachable ({error}); run `make services`")


@pytest.fixture(scope="session")
def shipped_policy() -> Policy:
    """The bundled policy exactly as shipped."""
    return load_policy(DEFAULT_POLICY)


@pytest.fixture(scope="session")
def full_policy(shipped_policy: Policy) -> Policy:
    """Every clause of the rulebook, without the standing thresholds' escalations (their own
    tests cover them; elsewhere they would only add lines to each expectation)."""
    return shipped_policy.model_copy(update={"standing_thresholds": ()})


@pytest.fixture(scope="session")
def policy(full_policy: Policy) -> Policy:
    """As `full_policy`, without 3.3(1)/(2)'s trace checks: the tests of the other clauses
    send no logistics traces, which those checks would rightly call false delivery."""
    return full_policy.model_copy(update={"trace_checks": False})


def without_warnings(policy: Policy) -> Policy:
    """The same rules with no pre-breach warnings (their timers would crowd store tests)."""
    return policy.model_copy(update={"warning_leads": {}})


def run(
    events: list[Event],
    policy: Policy,
    until: datetime | None = None,
    uow: Any = None,
    warnings: bool = False,
) -> list[dict[str, Any]]:
    """Replay events (in the given order) and return the outcome lines, in order of `at`;
    pre-breach warnings only when asked for (the rule tests are about breaches)."""
    replayer = Replayer(policy, uow)
    for event in events:
        replayer.feed(event)
    outcomes = [outcome.as_json() for outcome in replayer.finish(until).in_order()]
    return [o for o in outcomes if warnings or o["kind"] != "warning"]


@pytest.fixture()
def sqlite_engine(tmp_path: Any) -> Iterator[Engine]:
    engine = make_engine(f"sqlite:///{tmp_path / 'slatimer.db'}")
    upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def pg_admin_engine() -> Iterator[Engine]:
    engine = make_engine(PG_URL, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            connection.execute(text("select 1"))
    except Exception as error:  # noqa: BLE001 - any failure to connect means "missing"
        engine.dispose()
        server_missing(f"PostgreSQL at {PG_URL}", error)
    yield engine
    engine.dispose()


@pytest.fixture()
def pg_engine(pg_admin_engine: Engine) -> Iterator[Engine]:
    """A fresh, migrated PostgreSQL database for one test, dropped afterwards."""
    name = f"slatimer_t_{uuid.uuid4().hex[:12]}"
    with pg_admin_engine.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    engine = make_engine(pg_admin_engine.url.set(database=name).render_as_string(False))
    try:
        upgrade(engine)
        yield engine
    finally:
        engine.dispose()
        with pg_admin_engine.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def sql_uow(engine: Engine) -> SqlUnitOfWork:
    return SqlUnitOfWork(session_factory(engine))


def fill_api_store(engine: Engine, policy: Policy) -> Engine:
    """The read API's and the console's store: m-1's o1 never collected (violation at 120 h),
    o2 collected at 110 h but learnt after its deadline (violation, then retraction), o3
    created at 50 h (collection due at 170 h); m-2's o9 never collected. As it was at
    121 h."""
    events = [
        created("o1", T0, "m-1"),
        created("o2", T0, "m-1"),
        created("o9", T0, "m-2"),
        created("o3", T0 + 50 * H, "m-1"),
        created("o4", T0 + 121 * H, "m-2"),  # moves the clock past 120 h
        collected("o2", T0 + 110 * H),
    ]
    run(events, policy, until=T0 + 121 * H, uow=sql_uow(engine))
    return engine


def issue_keys(engine: Engine, merchants: tuple[str, ...] = ("m-1", "m-2")) -> dict[str, str]:
    with session_factory(engine)() as session:
        issued = {merchant: issue_key(session, merchant) for merchant in merchants}
        session.commit()
    return issued
