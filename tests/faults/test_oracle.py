"""The oracle can fail. A record that `slatimer replay` itself wrote into PostgreSQL passes it;
each fault planted in a copy of that record — an event lost, a ledger entry recorded twice, a
violation graded differently or never raised, a breach raised and withdrawn with no late
evidence to explain it, a deadline fired late — fails it, for the reason planted. Without
this, a green fault suite could be an oracle that never looks."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from config.policy import load_policy
from config.settings import Settings
from store.sql.engine import make_engine
from tests.conftest import sql_uow
from tests.faults.figures import FIGURES
from tests.faults.harness import Producer, check_after_drain, make_stream, scaled_policy
from worker.service.replay import Replayer

pytestmark = pytest.mark.faults

EXACT = ("violation", "escalation", "retraction")
FIRST_VIOLATION = "(select min(id) from outcomes where kind = 'violation' and not retracted)"
PLANTS = {
    "an event lost": (
        ["delete from inbox where event_id = (select min(event_id) from inbox)"],
        "never reached the inbox",
    ),
    "a ledger entry recorded twice": (
        [
            "alter table points_ledger drop constraint "
            "uq_points_ledger_order_id_rule_subject_outcome_at_entry",
            "insert into points_ledger (merchant_id, order_id, rule, subject, outcome_at, entry,"
            " points, at) select merchant_id, order_id, rule, subject, outcome_at, entry, points,"
            " at from points_ledger where id = (select min(id) from points_ledger)",
        ],
        "points_ledger",
    ),
    "a violation graded serious": (
        [f"update outcomes set severity = 'serious', points = 8 where id = {FIRST_VIOLATION}"],
        "standing outcomes differ",
    ),
    "a violation never raised": (
        [
            "delete from points_ledger where (order_id, rule) in (select order_id, rule from"
            f" outcomes where id = {FIRST_VIOLATION})",
            f"delete from outcomes where id = {FIRST_VIOLATION}",
        ],
        "standing outcomes differ",
    ),
    "a breach raised and withdrawn, its evidence on time": (
        [
            "insert into outcomes (kind, order_id, merchant_id, rule, subject, category, clause,"
            " at, severity, points, retracted) select 'violation', order_id, 'm-' || order_id,"
            " 'collection_overdue', '', 'out_of_stock', '2.1.1', occurred_at + interval '1 s',"
            " 'general', 4, true from inbox where type = 'order.created'"
            " order by order_id limit 1",
            "insert into retractions (outcome_id, order_id, rule, at, evidence) select id,"
            " order_id, rule, at, 'planted' from outcomes"
            " where id = (select max(id) from outcomes)",
        ],
        "outcomes differ",
    ),
    "a deadline fired late": (
        [
            "update outcomes set recorded_at = at + interval '60 seconds'"
            f" where id = {FIRST_VIOLATION}"
        ],
        "late deadlines",
    ),
}


@contextmanager
def copy_of(pg: Engine, name: str) -> Iterator[Engine]:
    """A copy of the private server's database (CREATE DATABASE … TEMPLATE), dropped after."""
    pg.dispose()  # a template must have no other connections
    admin = make_engine(pg.url.render_as_string(False), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}" TEMPLATE postgres'))
    copy = make_engine(pg.url.set(database=name).render_as_string(False))
    try:
        yield copy
    finally:
        copy.dispose()
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        admin.dispose()


def test_the_oracle_passes_replays_record_and_fails_on_each_planted_fault(
    tmp_path: Path, pg: Engine
) -> None:
    # Given a stream whose deadlines are all ahead (nothing recorded is late) and the record
    # `slatimer replay` makes of it in the private PostgreSQL
    policy_file = scaled_policy(tmp_path)
    stream = make_stream(datetime.now(UTC) + timedelta(minutes=5), seed=6)
    producer = Producer(Settings(database_url=pg.url.render_as_string(False)), stream)
    producer.confirmed = stream.events
    replayer = Replayer(load_policy(policy_file), sql_uow(pg))
    for event in stream.events:
        replayer.feed(event)
    replayer.finish(stream.end)
    caught = []
    with FIGURES.untallied():  # a check of the oracle, not a run of the runtime
        # Then the oracle passes it as it is
        check_after_drain(pg, producer, policy_file, exact=EXACT)
        for number, (plant, (statements, reason)) in enumerate(PLANTS.items()):
            # and fails a copy with one fault planted, naming that fault
            with copy_of(pg, f"planted_{number}") as planted:
                with planted.begin() as connection:
                    for statement in statements:
                        connection.execute(text(statement))
                with pytest.raises(AssertionError, match=reason):
                    check_after_drain(planted, producer, policy_file, exact=EXACT)
            caught.append(plant)
    FIGURES.add("planted_faults_caught", len(caught))
