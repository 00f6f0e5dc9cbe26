"""The SQL store on SQLite (the embedded default), migrated by Alembic."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from sqlalchemy import Engine

from models.policy import Policy
from tests.store_contract import CHECKS


@pytest.mark.parametrize("check", CHECKS, ids=lambda check: check.__name__)
def test_sqlite_store(
    check: Callable[[Engine, Policy], None], sqlite_engine: Engine, policy: Policy
) -> None:
    check(sqlite_engine, policy)
