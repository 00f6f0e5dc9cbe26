"""The SQL store on the real PostgreSQL server, migrated by Alembic (fails in CI if missing)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from models.policy import Policy
from store.sql.migrate import server_warnings
from store.sql.outbox import outbox
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


WAVE_OF_ALERTS = text(
    """
    INSERT INTO alerts (alert_id, merchant_id, order_id, kind, rule, body, created_at, state,
                        attempts, next_attempt_at)
    SELECT 'alert-' || n, 'm-' || (n % 100), 'ord-' || (n / 2), 'violation', 'r', '{}',
           :now, CASE WHEN n <= 10000 THEN 'delivered' ELSE 'pending' END, 0,
           :now - make_interval(secs => n % 60)
    FROM generate_series(1, 30000) AS n
    """
)


def test_the_relay_claim_reads_only_what_it_claims_after_a_wave_of_unanalyzed_alerts(
    pg_engine: Engine,
) -> None:
    # Given statistics taken while the outbox was empty, then a wave of 20,000 pending alerts
    # (two per order, the second queued behind the first) on top of 10,000 delivered ones
    now = datetime(2026, 11, 11, 12, tzinfo=UTC)
    with pg_engine.begin() as connection:
        connection.execute(text("ANALYZE alerts"))
        connection.execute(WAVE_OF_ALERTS, {"now": now})
    # When the relay claims a batch of 100
    with outbox(pg_engine) as box:
        claimed = [alert.order_id for alert in box.due(now, 100)]
        read = _alert_rows_read_so_far(box.session)
    # Then it claims 100 alerts, one per order (the earlier of each pair), and reads a few
    # hundred alert rows to do so, not the wave (a plan that sorted every due alert, or
    # hash-anti-joined them against every pending one, read all 20,000 or more)
    assert len(claimed) == len(set(claimed)) == 100
    assert read < 1_000


def _alert_rows_read_so_far(session: Session) -> int:
    """Rows this transaction has read from `alerts`, by sequential or index scans alike
    (PostgreSQL's own per-transaction counters), whatever plan read them."""
    query = text(
        "SELECT seq_tup_read + idx_tup_fetch FROM pg_stat_xact_user_tables WHERE relname = 'alerts'"
    )
    return int(session.execute(query).scalar_one())


def test_the_relay_claim_puts_back_the_planner_settings_that_were_in_force(
    pg_engine: Engine,
) -> None:
    # Given a transaction that has hash joins off already, and sorting at the server default
    with outbox(pg_engine) as box:
        box.session.execute(text("SET LOCAL enable_hashjoin = off"))
        # When the relay claims (it turns sorting and hash and merge joins off for the claim)
        box.due(datetime(2026, 11, 11, 12, tzinfo=UTC), 100)
        # Then each setting is back to what it was before the claim, not to the default
        settings = box.session.execute(
            text(
                "SELECT current_setting('enable_sort'), current_setting('enable_hashjoin'),"
                " current_setting('enable_mergejoin')"
            )
        ).one()
    assert tuple(settings) == ("on", "off", "on")
