"""The SQL store on the real PostgreSQL server, migrated by Alembic (fails in CI if missing)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from sqlalchemy import Engine

from models.policy import Policy
from tests.store_contract import CHECKS

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("check", CHECKS, ids=lambda check: check.__name__)
def test_postgres_store(
    check: Callable[[Engine, Policy], None], pg_engine: Engine, policy: Policy
) -> None:
    check(pg_engine, policy)
