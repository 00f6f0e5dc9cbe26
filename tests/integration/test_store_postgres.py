"""The SQL store on the real PostgreSQL server, migrated by Alembic (fails in CI if missing)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from sqlalchemy import Engine, text

from models.policy import Policy
from store.migrate import server_warnings
from tests.store_contract import CHECKS

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("check", CHECKS, ids=lambda check: check.__name__)
def test_postgres_store(
    check: Callable[[Engine, Policy], None], pg_engine: Engine, policy: Policy
) -> None:
    check(pg_engine, policy)


def test_the_server_check_warns_exactly_when_autovacuum_is_off(pg_engine: Engine) -> None:
    # Given the real server's autovacuum setting (this machine's runs with it off)
    with pg_engine.connect() as connection:
        autovacuum = connection.execute(text("SHOW autovacuum")).scalar()
    # When the dispatcher's start-up check looks at the server
    warnings = server_warnings(pg_engine)
    # Then it names autovacuum if, and only if, it is off
    assert [w.split(":")[0] for w in warnings] == (
        ["autovacuum is off"] if autovacuum == "off" else []
    )


def test_the_server_check_has_nothing_to_say_about_sqlite(sqlite_engine: Engine) -> None:
    assert server_warnings(sqlite_engine) == []
