"""The console's pages on SQLite: login and its cookie, who sees what (404 as in the API), what
each page shows, and that what it shows is escaped."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta

import orjson
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import Engine, update

from config.settings import Settings
from models.policy import Policy
from store.sql.engine import session_factory
from store.sql.tables import AlertRow, DeadLetterRow, RetractionRow
from tests.builders import T0, H, created
from tests.conftest import fill_api_store, issue_keys, run, sql_uow
from worker.api.keys import issue_key
from worker.console import session as console_session
from worker.console.pages import chart_json
from worker.console.queries import rolling_points
from worker.console.server import build_app

OPERATOR_KEY = "operator-key-for-tests"
NOW = T0 + 121 * H
LOGIN = "/console/login"


@pytest.fixture()
def engine(sqlite_engine: Engine, policy: Policy) -> Engine:
    return fill_api_store(sqlite_engine, policy)


@pytest.fixture()
def keys(engine: Engine) -> dict[str, str]:
    return {**issue_keys(engine), "operator": OPERATOR_KEY}


@pytest.fixture()
def client(engine: Engine) -> Iterator[TestClient]:
    settings = Settings(
        operator_api_key=SecretStr(OPERATOR_KEY), console_secret=SecretStr("s" * 32)
    )
    with TestClient(build_app(engine, settings, now=lambda: NOW)) as test_client:
        yield test_client


def log_in(client: TestClient, key: str) -> str:
    """Log in with `key`; returns where the console sent the browser."""
    response = client.post(LOGIN, data={"key": key}, follow_redirects=False)
    assert response.status_code == 303, response.text
    return str(response.headers["location"])


def test_login_sets_a_signed_httponly_strict_cookie_and_logout_clears_it(
    client: TestClient, keys: dict[str, str]
) -> None:
    response = client.post(LOGIN, data={"key": keys["m-1"]}, follow_redirects=False)
    assert response.headers["location"] == "/console/merchants/m-1"
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"{console_session.COOKIE}=")
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/console" in cookie
    assert keys["m-1"] not in cookie  # the key's hash travels, never the key
    assert client.get("/console/merchants/m-1").status_code == 200

    logout = client.post("/console/logout", follow_redirects=False)
    assert logout.status_code == 303 and logout.headers["location"] == LOGIN
    assert 'slatimer_console=""' in logout.headers["set-cookie"]
    after = client.get("/console/merchants/m-1", follow_redirects=False)
    assert after.status_code == 303 and after.headers["location"] == LOGIN


def test_the_operator_key_logs_in_to_the_operator_view(
    client: TestClient, keys: dict[str, str]
) -> None:
    assert log_in(client, keys["operator"]) == "/console/operator"
    home = client.get("/console", follow_redirects=False)
    assert home.status_code == 303 and home.headers["location"] == "/console/operator"
    assert client.get("/console/operator").status_code == 200
    assert client.get("/console/merchants/m-2").status_code == 200


@pytest.mark.parametrize("key", ["", "slt_not-a-key", OPERATOR_KEY + "x"])
def test_an_unknown_key_is_refused_and_no_cookie_is_set(client: TestClient, key: str) -> None:
    response = client.post(LOGIN, data={"key": key}, follow_redirects=False)
    assert response.status_code == 401
    assert "not valid" in response.text and "set-cookie" not in response.headers


@pytest.mark.parametrize(
    "path", ["/console", "/console/operator", "/console/merchants/m-1", "/console/orders/o1"]
)
def test_without_a_session_every_page_redirects_to_login(client: TestClient, path: str) -> None:
    response = client.get(path, follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == LOGIN


def test_a_tampered_or_expired_cookie_or_a_reissued_key_ends_the_session(
    client: TestClient, engine: Engine, keys: dict[str, str]
) -> None:
    log_in(client, keys["m-1"])
    token = client.cookies[console_session.COOKIE]
    digest, issued, mac = token.split(".")
    secret = b"s" * 32
    forged = f"{digest}.{int(issued) + 1}.{mac}"
    expired = console_session.sign(digest, NOW - timedelta(hours=13), secret)
    for bad in (forged, expired):
        client.cookies.set(console_session.COOKIE, bad, path="/console")
        assert client.get("/console/merchants/m-1", follow_redirects=False).status_code == 303
    client.cookies.set(console_session.COOKIE, token, path="/console")
    assert client.get("/console/merchants/m-1").status_code == 200
    with session_factory(engine)() as db:
        issue_key(db, "m-1")
        db.commit()
    assert client.get("/console/merchants/m-1", follow_redirects=False).status_code == 303


def test_another_merchants_order_and_pages_are_404_exactly_like_missing_ones(
    client: TestClient, keys: dict[str, str]
) -> None:
    # Given m-2 is logged in, When it opens m-1's order, m-1's page and the operator view
    log_in(client, keys["m-2"])
    for path, missing in (
        ("/console/orders/o1", "/console/orders/nope"),
        ("/console/merchants/m-1", "/console/merchants/nobody"),
        ("/console/operator", "/console/nothing-here"),
    ):
        forbidden = client.get(path)
        # Then each answers 404, as for what does not exist, and names nothing of m-1's
        assert forbidden.status_code == 404, path
        if missing != "/console/nothing-here":
            assert forbidden.text == client.get(missing).text
        assert "o1" not in forbidden.text and "m-1" not in forbidden.text
    assert client.get("/console/orders/o9").status_code == 200


def test_the_merchant_view_lists_orders_at_risk_with_rule_clause_deadline_and_countdown(
    client: TestClient, keys: dict[str, str]
) -> None:
    # Given o3's collection is due at 170 h and it is now 121 h (49 h to go)
    log_in(client, keys["m-1"])
    page = client.get("/console/merchants/m-1?hours=72").text
    (row,) = re.findall(r"<tr>\s*<td><a href=\"/console/orders/o3\">.*?</tr>", page, re.S)
    assert "collection_overdue" in row and "2.1.1 / 3.2.1(1)" in row
    assert '<time class="countdown" datetime="2026-03-09T11:00:00Z">2d 01h 00m</time>' in row
    # the 48 h default window leaves it out: it is not yet at risk
    assert "/console/orders/o3" not in client.get("/console/merchants/m-1").text


def test_the_merchant_view_charts_points_in_the_window_against_the_thresholds(
    client: TestClient, keys: dict[str, str]
) -> None:
    log_in(client, keys["m-1"])
    page = client.get("/console/merchants/m-1").text
    points = client.get(
        "/merchants/m-1/points", headers={"Authorization": f"Bearer {keys['m-1']}"}
    ).json()["total"]
    assert f'<strong id="points-total">{points}</strong>' in page
    assert f"{12 - points} to the 12-point measure (warning)" in page
    chart = re.search(r'<script type="application/json" id="points-data">(.*?)</script>', page)
    assert chart is not None
    assert '"thresholds":[{"points":12,"measure":"warning"},{"points":24' in chart.group(1)


def test_the_merchant_view_lists_its_alerts_with_failures(
    client: TestClient, engine: Engine, keys: dict[str, str]
) -> None:
    with session_factory(engine)() as db:
        db.execute(
            update(AlertRow)
            .where(AlertRow.order_id == "o1", AlertRow.kind == "violation")
            .values(state="failed", attempts=10, last_status=503, last_error="receiver said 503")
        )
        db.commit()
    log_in(client, keys["m-1"])
    page = client.get("/console/merchants/m-1").text
    assert "receiver said 503" in page and "failed 1" in page
    log_in(client, keys["m-2"])
    assert "receiver said 503" not in client.get("/console/merchants/m-2").text


def test_the_order_timeline_shows_events_clocks_outcomes_and_the_retraction_evidence(
    client: TestClient, keys: dict[str, str]
) -> None:
    log_in(client, keys["m-1"])
    page = client.get("/console/orders/o2").text
    kinds = re.findall(r'<li class="kind-([a-z-]+)">', page)
    assert kinds.index("event") < kinds.index("violation") < kinds.index("retraction")
    assert {"event", "clock", "violation", "retraction"} <= set(kinds)
    assert "order.created" in page and "order.collected" in page
    assert "collection_overdue withdrawn" in page


def test_html_in_evidence_text_and_order_ids_is_shown_as_text(
    client: TestClient, engine: Engine, policy: Policy, keys: dict[str, str]
) -> None:
    # Given evidence and an order id that carry markup
    script = '<script>alert("pwned")</script>'
    run([created("<b>o5</b>", NOW - 100 * H, "m-1")], policy, until=NOW, uow=sql_uow(engine))
    with session_factory(engine)() as db:
        db.execute(update(RetractionRow).values(evidence=f"scan {script}"))
        db.commit()
    # When the pages that show them are read
    log_in(client, keys["m-1"])
    order = client.get("/console/orders/o2").text
    merchant = client.get("/console/merchants/m-1").text
    # Then the markup is text, never markup
    assert "scan &lt;script&gt;alert(&#34;pwned&#34;)&lt;/script&gt;" in order
    assert script not in order
    assert "&lt;b&gt;o5&lt;/b&gt;" in merchant and "<b>o5</b>" not in merchant
    assert (
        "script-src 'self'" in client.get("/console/orders/o2").headers["content-security-policy"]
    )


def test_the_operator_view_shows_backlog_dead_letters_outbox_and_merchants_near_a_measure(
    client: TestClient, engine: Engine, keys: dict[str, str]
) -> None:
    with session_factory(engine)() as db:
        db.add(
            DeadLetterRow(
                received_at=NOW, source="q", field="type", reason="unknown type 'x'", body=b"{"
            )
        )
        db.commit()
    log_in(client, keys["operator"])
    page = client.get("/console/operator").text
    backlog = re.search(r'<table id="backlog">(.*?)</table>', page, re.S)
    assert backlog is not None
    assert "<tr><td>collection_overdue</td><td>2</td><td>0</td></tr>" in backlog.group(1)
    assert "1 waiting for" in page and "unknown type &#39;x&#39;" in page
    nearest = re.search(r'<table id="nearest">(.*?)</table>', page, re.S)
    assert nearest is not None
    assert nearest.group(1).index(">m-1<") < nearest.group(1).index(">m-2<")  # m-1 has more


def test_chart_data_cannot_close_its_script_tag() -> None:
    text = chart_json({"measure": "</script><script>alert(1)</script>", "and": "a & b"})
    assert "<" not in text and ">" not in text and "&" not in text
    assert orjson.loads(text)["measure"] == "</script><script>alert(1)</script>"


def test_rolling_points_count_violations_in_the_window_once_recorded() -> None:
    window = timedelta(days=10)
    day = timedelta(days=1)
    # a 3-point violation on day 0 recorded on day 1, a 6-point one on day 4, reversed on day 5
    entries = [(T0, T0 + day, 3), (T0 + 4 * day, T0 + 4 * day, 6), (T0 + 4 * day, T0 + 5 * day, -6)]
    tick = timedelta(microseconds=1)
    # day 0's violation counts up to the window's end inclusive (as `slatimer merchant`), and
    # the series steps down just after it
    assert rolling_points(entries, window, now=T0 + 20 * day) == [
        (T0 + day, 3),
        (T0 + 4 * day, 9),
        (T0 + 5 * day, 3),
        (T0 + 10 * day + tick, 0),
        (T0 + 14 * day + tick, 0),
        (T0 + 20 * day, 0),
    ]
