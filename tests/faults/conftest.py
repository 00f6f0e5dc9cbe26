"""Fault-test fixtures: servers owned by the test (never the machine's shared ones), the runtime's
processes on them, and the figures printed at the end of the run (and written to results.json).

A server that cannot start skips the test locally but fails it in CI (CI=true)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from store.sql.engine import make_engine
from tests.faults.figures import FIGURES
from tests.faults.servers import PrivatePostgres, PrivateRabbit, PrivateRedis, Proxy, started


@pytest.fixture()
def private_pg() -> Iterator[PrivatePostgres]:
    """A migrated PostgreSQL of this test's own; `.crash()` / `.start()` at will."""
    server = started(PrivatePostgres(), "init")
    yield server
    server.destroy()


@pytest.fixture()
def pg(private_pg: PrivatePostgres) -> Iterator[Engine]:
    engine = make_engine(private_pg.url)
    yield engine
    engine.dispose()


@pytest.fixture()
def private_redis() -> Iterator[PrivateRedis]:
    """A Redis with AOF (`appendfsync everysec`) of this test's own; `.crash()` / `.start()`."""
    server = started(PrivateRedis(), "start")
    yield server
    server.destroy()


@pytest.fixture()
def private_rabbit() -> Iterator[PrivateRabbit]:
    """A RabbitMQ node of this test's own; `.crash()` (kill -9) / `.start()` on its data."""
    server = started(PrivateRabbit(), "start")
    yield server
    server.destroy()


@pytest.fixture()
def proxy(private_redis: PrivateRedis) -> Iterator[Proxy]:
    """A TCP proxy in front of the private Redis that can cut or stall every connection."""
    through = Proxy(private_redis.port)
    yield through
    through.close()


@pytest.fixture(autouse=True)
def _named(request: pytest.FixtureRequest) -> None:
    FIGURES.tests.append(request.node.name)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "faults: fault injection on private servers (make test-faults)"
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.faults)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not FIGURES.tests:
        return
    FIGURES.write()
    terminalreporter.section("fault-test figures (tests/faults/results.json)")
    for line in FIGURES.table():
        terminalreporter.write_line(line)
