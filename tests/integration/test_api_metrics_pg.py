"""The read API's /metrics on PostgreSQL: every gauge equals what the tables hold; and a real
`slatimer api` process serving it."""

from __future__ import annotations

import socket
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine, func, select

from config.settings import Settings
from models.policy import Policy
from store.sql.tables import AlertRow, DeadLetterRow, DeadlineRow, OutcomeRow
from tests.builders import T0, H, collected, created, stockout
from tests.conftest import run, sql_uow
from tests.runtime import processes, runtime_env, wait_for
from worker.api.app import create_app

pytestmark = pytest.mark.integration
NOW = T0 + 121 * H
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def seed(engine: Engine, policy: Policy) -> None:
    """Violations (one withdrawn), open clocks of two rules, dead letters (one replayed), alerts."""
    events = [
        created("o1", T0, "m-1"),
        created("o2", T0, "m-1"),
        created("o3", T0 + 50 * H, "m-2"),
        stockout("o3", T0 + 100 * H),
        created("o4", NOW, "m-2"),
        collected("o2", T0 + 110 * H),
    ]
    run(events, policy, until=NOW, uow=sql_uow(engine))
    with sql_uow(engine) as uow:
        session = uow.session
        for number, replayed in enumerate((None, None, NOW)):
            session.add(
                DeadLetterRow(
                    received_at=NOW, source="q", field=f"f{number}", reason="r", body=b"x",
                    replayed_at=replayed,
                )
            )  # fmt: skip
        session.add(alert("a-failed", "failed"))
        session.add(alert("a-delivered", "delivered"))
        uow.commit()


def alert(alert_id: str, state: str) -> AlertRow:
    return AlertRow(
        alert_id=alert_id, merchant_id="m-1", order_id="o1", kind="violation", rule="r",
        body={}, created_at=NOW, state=state, attempts=1, next_attempt_at=NOW,
    )  # fmt: skip


def scrape(text: str) -> Samples:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_metrics_equal_what_the_tables_hold(pg_engine: Engine, policy: Policy) -> None:
    seed(pg_engine, policy)
    app = create_app(pg_engine, Settings(), now=lambda: NOW)
    with TestClient(app) as client:
        samples = scrape(client.get("/metrics").text)
    with pg_engine.connect() as connection:
        open_by_rule = connection.execute(
            select(DeadlineRow.rule, DeadlineRow.state, func.count())
            .where(DeadlineRow.state.in_(("pending", "enqueued")))
            .group_by(DeadlineRow.rule, DeadlineRow.state)
        ).all()
        outcomes = connection.execute(
            select(OutcomeRow.kind, OutcomeRow.rule, OutcomeRow.retracted, func.count()).group_by(
                OutcomeRow.kind, OutcomeRow.rule, OutcomeRow.retracted
            )
        ).all()
        alerts = dict(
            connection.execute(select(AlertRow.state, func.count()).group_by(AlertRow.state)).all()
        )
    assert samples[("slatimer_store_up", ())] == 1
    assert samples[("slatimer_dlq_depth", ())] == 2
    assert "collection_overdue" in {rule for rule, _, _ in open_by_rule}
    assert {"stockout_contact_overdue", "collection_overdue"} <= {r for _, r, _, _ in outcomes}
    for rule, state, count in open_by_rule:
        assert samples[("slatimer_deadlines_open", (("rule", rule), ("state", state)))] == count
    assert sum(v for (name, _), v in samples.items() if name == "slatimer_deadlines_open") == sum(
        count for _, _, count in open_by_rule
    )
    assert any(kind == "violation" and retracted for kind, _, retracted, _ in outcomes)
    for kind, rule, retracted, count in outcomes:
        labels = (("kind", kind), ("retracted", str(retracted).lower()), ("rule", rule))
        assert samples[("slatimer_outcomes", labels)] == count
    for state in ("pending", "delivered", "failed", "disabled"):
        assert samples[("slatimer_alerts", (("state", state),))] == alerts.get(state, 0)
    assert samples[("slatimer_deadlines_overdue_max_seconds", (("state", "pending"),))] == 0


def test_overdue_open_deadlines_show_how_late_the_oldest_is(
    pg_engine: Engine, policy: Policy
) -> None:
    seed(pg_engine, policy)
    later = NOW + timedelta(hours=100)  # the oldest open clock, due at 146 h, is 75 h late
    with TestClient(create_app(pg_engine, Settings(), now=lambda: later)) as client:
        samples = scrape(client.get("/metrics").text)
    overdue = samples[("slatimer_deadlines_overdue_max_seconds", (("state", "pending"),))]
    assert overdue == pytest.approx(75 * 3600, abs=1)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_a_real_api_process_serves_health_and_metrics(
    pg_engine: Engine, policy: Policy, tmp_path: Path
) -> None:
    seed(pg_engine, policy)
    port = free_port()
    env = runtime_env(pg_engine.url.render_as_string(False), "memory://")
    base = f"http://127.0.0.1:{port}"
    with processes(env, tmp_path) as children:
        children.start("api", "api", "--port", str(port))
        try:
            wait_for(lambda: _answers(f"{base}/healthz"), 30, "the API to answer")
        except AssertionError:
            raise AssertionError(children.logs()) from None
        samples = scrape(httpx.get(f"{base}/metrics").text)
        assert httpx.get(f"{base}/orders/o1").status_code == 401
    assert samples[("slatimer_dlq_depth", ())] == 2
    assert samples[("slatimer_store_up", ())] == 1


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
