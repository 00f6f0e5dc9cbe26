"""The read API on SQLite: auth, merchant isolation, each endpoint's shape, the at-risk window."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import Engine, select

from config.settings import Settings
from models.policy import Policy
from store.sql.engine import session_factory
from store.sql.tables import DeadLetterRow, MerchantRow
from tests.builders import T0, H, event
from tests.conftest import fill_api_store, issue_keys, run, sql_uow
from worker.api.app import create_app
from worker.api.keys import hash_key, issue_key

OPERATOR_KEY = "operator-key-for-tests"
NOW = T0 + 121 * H


@pytest.fixture()
def engine(sqlite_engine: Engine, policy: Policy) -> Engine:
    return fill_api_store(sqlite_engine, policy)


@pytest.fixture()
def keys(engine: Engine) -> dict[str, str]:
    return issue_keys(engine)


@pytest.fixture()
def client(engine: Engine) -> Iterator[TestClient]:
    settings = Settings(operator_api_key=SecretStr(OPERATOR_KEY))
    with TestClient(create_app(engine, settings, now=lambda: NOW)) as test_client:
        yield test_client


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_only_the_hash_of_an_issued_key_is_stored(engine: Engine, keys: dict[str, str]) -> None:
    with session_factory(engine)() as session:
        stored = session.scalar(
            select(MerchantRow.api_key_hash).where(MerchantRow.merchant_id == "m-1")
        )
    assert stored == hash_key(keys["m-1"]) != keys["m-1"]
    assert keys["m-1"].startswith("slt_") and len(keys["m-1"]) > 40


@pytest.mark.parametrize("header", [{}, auth("wrong"), {"Authorization": "Basic abc"}])
def test_without_a_valid_key_every_data_path_is_401(
    client: TestClient, keys: dict[str, str], header: dict[str, str]
) -> None:
    for path in ("/orders/o1", "/merchants/m-1/violations", "/merchants/m-1/points"):
        response = client.get(path, headers=header)
        assert response.status_code == 401, path
        assert response.headers["www-authenticate"] == "Bearer"


def test_reissuing_a_key_revokes_the_old_one(
    client: TestClient, engine: Engine, keys: dict[str, str]
) -> None:
    with session_factory(engine)() as session:
        issue_key(session, "m-1")
        session.commit()
    assert client.get("/orders/o1", headers=auth(keys["m-1"])).status_code == 401


def test_a_merchant_cannot_see_another_merchants_order_or_paths_it_gets_404(
    client: TestClient, keys: dict[str, str]
) -> None:
    # Given m-2's key, When it asks for m-1's order and m-1's merchant paths
    for path in (
        "/orders/o1",
        "/merchants/m-1/violations",
        "/merchants/m-1/points",
        "/merchants/m-1/at-risk",
    ):
        forbidden = client.get(path, headers=auth(keys["m-2"]))
        missing = client.get(
            path.replace("m-1", "nobody").replace("o1", "nope"), headers=auth(keys["m-2"])
        )
        # Then the answer is exactly the one for something that does not exist
        assert forbidden.status_code == missing.status_code == 404, path
        assert forbidden.json() == missing.json()
    assert client.get("/orders/o9", headers=auth(keys["m-2"])).status_code == 200


def test_the_operator_key_reads_every_merchant(client: TestClient, keys: dict[str, str]) -> None:
    for path in ("/orders/o1", "/orders/o9", "/merchants/m-1/points", "/merchants/m-2/points"):
        assert client.get(path, headers=auth(OPERATOR_KEY)).status_code == 200, path
    assert client.get("/merchants/nobody/points", headers=auth(OPERATOR_KEY)).status_code == 404


def test_an_order_shows_its_clocks_outcomes_with_retractions_and_evidence_in_time_order(
    client: TestClient, keys: dict[str, str]
) -> None:
    body = client.get("/orders/o2", headers=auth(keys["m-1"])).json()
    assert body["order_id"] == "o2" and body["merchant_id"] == "m-1"
    clocks = {clock["rule"]: clock for clock in body["clocks"]}
    assert datetime.fromisoformat(clocks["collection_overdue"]["due_at"]) == T0 + 120 * H
    assert all(clock["state"] in ("fired", "met") for clock in body["clocks"])
    violation = next(o for o in body["outcomes"] if o["kind"] == "violation")
    assert violation["rule"] == "collection_overdue" and violation["retracted"] is True
    assert violation["retraction"]["evidence"]
    assert datetime.fromisoformat(violation["at"]) == T0 + 120 * H
    times = [datetime.fromisoformat(e["occurred_at"]) for e in body["evidence"]]
    assert [e["type"] for e in body["evidence"]] == ["order.created", "order.collected"]
    assert times == sorted(times)
    assert body["evidence"][0]["body"]["merchant_id"] == "m-1"


def test_violations_list_the_merchants_violations_withdrawn_ones_flagged(
    client: TestClient, keys: dict[str, str]
) -> None:
    body = client.get("/merchants/m-1/violations", headers=auth(keys["m-1"])).json()
    assert body["merchant_id"] == "m-1"
    found = {(v["order_id"], v["retracted"]) for v in body["violations"]}
    assert found == {("o1", False), ("o2", True)}
    assert all(v["kind"] == "violation" and v["merchant_id"] == "m-1" for v in body["violations"])


def test_points_are_the_ledger_total_and_its_entries(
    client: TestClient, keys: dict[str, str]
) -> None:
    body = client.get("/merchants/m-1/points", headers=auth(keys["m-1"])).json()
    assert body["total"] == sum(entry["points"] for entry in body["entries"])
    assert {entry["entry"] for entry in body["entries"]} == {"charge", "reversal"}
    assert body["total"] > 0


@pytest.mark.parametrize(("hours", "orders"), [(24, []), (48, []), (50, ["o3"]), (720, ["o3"])])
def test_at_risk_lists_orders_with_open_deadlines_due_within_the_window(
    client: TestClient, keys: dict[str, str], hours: int, orders: list[str]
) -> None:
    # Given o3's collection is due at 170 h and it is now 121 h (49 h to go)
    response = client.get(f"/merchants/m-1/at-risk?hours={hours}", headers=auth(keys["m-1"]))
    body = response.json()
    assert [order["order_id"] for order in body["orders"]] == orders
    for order in body["orders"]:
        (clock,) = order["clocks"]
        assert clock["rule"] == "collection_overdue"
        assert clock["due_in_seconds"] == pytest.approx(49 * 3600)
    assert body["hours"] == hours and datetime.fromisoformat(body["as_of"]) == NOW


def test_at_risk_refuses_a_window_that_is_not_positive(
    client: TestClient, keys: dict[str, str]
) -> None:
    response = client.get("/merchants/m-1/at-risk?hours=0", headers=auth(keys["m-1"]))
    assert response.status_code == 422


def test_healthz_and_openapi_need_no_key(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/orders/{order_id}", "/merchants/{merchant_id}/at-risk", "/healthz"} <= set(paths)


def test_metrics_are_derived_from_the_store(client: TestClient, engine: Engine) -> None:
    with session_factory(engine)() as session:
        session.add(DeadLetterRow(received_at=NOW, source="q", field="type", reason="x", body=b"{"))
        session.commit()
    text = client.get("/metrics").text
    assert "slatimer_store_up 1.0" in text
    assert 'slatimer_deadlines_open{rule="collection_overdue",state="pending"} 2.0' in text
    assert "slatimer_dlq_depth 1.0" in text
    assert (
        'slatimer_outcomes{kind="violation",retracted="true",rule="collection_overdue"} 1.0' in text
    )
    assert 'slatimer_alerts{state="failed"} 0.0' in text


def test_a_working_time_clock_shows_its_calendar_and_paused_time(
    client: TestClient, engine: Engine, keys: dict[str, str], policy: Policy
) -> None:
    # an IPR complaint against m-1 received on Saturday (Hong Kong): Monday and Tuesday count;
    # a closure on Monday 09:00-12:00 HKT pauses the response period for 3 h
    closed = (datetime(2026, 3, 9, 1, 0, tzinfo=UTC), datetime(2026, 3, 9, 4, 0, tzinfo=UTC))
    events = [
        event("ipr.complaint_filed", "ipr:C1", NOW, complaint_id="C1", merchant_id="m-1"),
        event(
            "calendar.closure_declared",
            "*",
            NOW,
            closure_id="t8",
            starts_at=closed[0].isoformat(),
            ends_at=closed[1].isoformat(),
        ),
    ]
    run(events, policy, until=NOW, uow=sql_uow(engine))
    assert client.get("/orders/ipr:C1", headers=auth(keys["m-2"])).status_code == 404
    body = client.get("/orders/ipr:C1", headers=auth(keys["m-1"])).json()
    clocks = {clock["rule"]: clock for clock in body["clocks"]}
    response = clocks["ipr_response_overdue"]
    assert datetime.fromisoformat(response["due_at"]) == datetime(2026, 3, 10, 19, 0, tzinfo=UTC)
    assert [tuple(map(datetime.fromisoformat, p)) for p in response["paused"]] == [closed]
    assert "closures t8" in response["calendar"]
    assert clocks["ipr_review_overdue"]["state"] == "pending"
