"""Engines and sessions for the SQL store, and the two dialect questions every statement
builder asks (which database, and how to match a list of values)."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import orjson
from sqlalchemy import (
    ColumnElement,
    Engine,
    any_,
    bindparam,
    create_engine,
    event,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session, sessionmaker


def make_engine(url: str, **options: Any) -> Engine:
    """An engine for `url`; SQLite gets WAL and immediate transactions, PostgreSQL a pre-ping
    pool. JSON columns (order states, alert bodies) go through orjson: the stdlib encoder and
    decoder were ~8% of a timer worker's time."""
    options = {"json_serializer": _json_dumps, "json_deserializer": orjson.loads, **options}
    if url.startswith("sqlite"):
        engine = create_engine(url, **options)
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _begin_immediate)
        return engine
    return create_engine(url, pool_pre_ping=True, **options)


def on_postgresql(session: Session) -> bool:
    """Whether this session talks to PostgreSQL (else SQLite, the embedded default)."""
    return session.get_bind().dialect.name == "postgresql"


def one_of(session: Session, column: Any, values: Collection[Any]) -> ColumnElement[bool]:
    """`column IN (values)`; on PostgreSQL `column = ANY(:array)`, one parameter whatever the
    count, so a batch's statement has the same text every time: psycopg converts it once and
    PostgreSQL can keep its plan. An IN list of a few hundred parameters was converted and
    planned anew for every batch (psycopg's query conversion alone ~10% of a timer worker)."""
    values = list(values)
    if on_postgresql(session):
        matches: ColumnElement[bool] = column == any_(
            bindparam(None, values, type_=ARRAY(column.type))
        )
    else:
        matches = column.in_(values)
    return matches


def _json_dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def _sqlite_pragmas(connection: Any, _record: Any) -> None:
    connection.isolation_level = None  # SQLAlchemy's "begin" event issues BEGIN itself
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _begin_immediate(connection: Any) -> None:
    """Take SQLite's write lock when a transaction starts. A deferred transaction that reads,
    then writes after another process committed, fails at once with "database is locked";
    an immediate one waits its turn (busy_timeout), which is what the embedded runtime's
    three processes need."""
    connection.exec_driver_sql("BEGIN IMMEDIATE")


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, expire_on_commit=False)
