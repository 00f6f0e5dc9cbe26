"""Alert delivery without servers: the retry schedule, Retry-After, status handling, URL
safety, Standard Webhooks signatures (with rotation), per-order claim order on SQLite, and
whole deliveries through httpx's MockTransport."""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import structlog
from sqlalchemy import Engine
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError
from typer.testing import CliRunner

from models.clock import VirtualClock
from models.outcomes import Outcome
from store.sql.outbox import Merchant, outbox
from tests.conftest import sql_uow
from worker.alerts.delivery import AlertConfig, Delivery, deliver, next_wait, relay_once
from worker.alerts.webhooks import (
    Allow,
    IpAddress,
    Response,
    UnsafeUrl,
    check_url,
    classify,
    encode_body,
    new_secret,
    parse_retry_after,
    retry_ceiling,
    retry_delay,
    signed_headers,
    signing_secrets,
)

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
HOUR = 3600.0
PUBLIC = "93.184.216.34"


# --- the retry schedule --------------------------------------------------------------------


def test_retry_delays_stay_within_their_ceiling_and_the_cap() -> None:
    rng = random.Random(7)
    for attempt in range(1, 12):
        ceiling = retry_ceiling(attempt)
        assert ceiling <= 12 * HOUR
        assert all(0 <= retry_delay(attempt, rng) <= ceiling for _ in range(200))
    assert [retry_ceiling(n) for n in (1, 2, 3)] == [30, 120, 480]


def test_ten_attempts_spread_over_about_a_day() -> None:
    # nine waits between ten attempts: full jitter halves the ceilings on average
    ceilings = sum(retry_ceiling(n) for n in range(1, 10))
    assert 46 * HOUR < ceilings < 48 * HOUR
    rng = random.Random(1)
    totals = [sum(retry_delay(n, rng) for n in range(1, 10)) for _ in range(2000)]
    assert 23 * HOUR < sum(totals) / len(totals) < 25 * HOUR


def test_the_schedule_scales_with_its_base_for_fast_tests() -> None:
    assert retry_ceiling(3, base=0.01, cap=1.0) == pytest.approx(0.16)
    assert retry_ceiling(9, base=0.01, cap=1.0) == 1.0


# --- Retry-After and status handling -------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("120", 120.0),
        (" 5 ", 5.0),
        ("Fri, 20 Nov 2026 12:01:30 GMT", 90.0),
        ("Fri, 20 Nov 2026 11:00:00 GMT", 0.0),
        ("soon", None),
        ("", None),
        (None, None),
    ],
)
def test_retry_after_as_seconds_or_an_http_date(value: str | None, seconds: float | None) -> None:
    assert parse_retry_after(value, NOW) == seconds


def test_retry_after_is_honoured_but_capped() -> None:
    config = AlertConfig(retry_base=1.0, retry_cap=600.0)
    rng = random.Random(3)
    asked = next_wait(1, Response(429, retry_after="300"), NOW, config, rng)
    assert asked == timedelta(seconds=300)
    capped = next_wait(1, Response(503, retry_after="86400"), NOW, config, rng)
    assert capped == timedelta(seconds=600)


@pytest.mark.parametrize(
    ("status", "verdict"),
    [
        (200, "delivered"),
        (204, "delivered"),
        (410, "gone"),
        (400, "failed"),
        (401, "failed"),
        (404, "failed"),
        (301, "failed"),
        (408, "retry"),
        (429, "retry"),
        (500, "retry"),
        (503, "retry"),
    ],
)
def test_status_classification(status: int, verdict: str) -> None:
    assert classify(status) == verdict


# --- URL safety ----------------------------------------------------------------------------

DNS = {
    "hooks.example.com": [PUBLIC],
    "internal.example.com": ["10.0.0.5"],
    "metadata.example.com": ["169.254.169.254"],
    "mixed.example.com": [PUBLIC, "192.168.1.10"],
    "six.example.com": ["::1"],
    "mapped.example.com": ["::ffff:10.0.0.1"],
    "localhost": ["127.0.0.1"],
}


def fake_resolve(host: str, _port: int) -> list[IpAddress]:
    return [ipaddress.ip_address(a) for a in DNS.get(host, [host])]


def test_a_public_https_url_is_accepted_and_pinned_to_its_address() -> None:
    target = check_url("https://hooks.example.com/slatimer", Allow(), fake_resolve)
    assert str(target.address) == PUBLIC and target.host == "hooks.example.com"


@pytest.mark.parametrize(
    "url",
    [
        "http://hooks.example.com/x",  # https only
        "ftp://hooks.example.com/x",
        "https://internal.example.com/x",
        "https://10.1.2.3/x",
        "https://127.0.0.1/x",
        "https://localhost:8443/x",
        "https://metadata.example.com/x",
        "https://169.254.169.254/latest",
        "https://[::1]/x",
        "https://six.example.com/x",
        "https://mapped.example.com/x",
        "https://mixed.example.com/x",  # one private answer is enough to refuse
        "https://user:pw@hooks.example.com/x",
    ],
)
def test_unsafe_urls_are_refused(url: str) -> None:
    with pytest.raises(UnsafeUrl):
        check_url(url, Allow(), fake_resolve)


def test_the_allow_list_permits_http_and_private_ranges() -> None:
    allow = Allow.parse("127.0.0.1, 10.0.0.0/8, partner.internal")
    assert check_url("http://127.0.0.1:8080/hook", allow, fake_resolve)
    assert check_url("https://internal.example.com/x", allow, fake_resolve)
    DNS["partner.internal"] = ["192.168.7.7"]
    assert check_url("http://partner.internal/x", allow, fake_resolve)
    with pytest.raises(UnsafeUrl):
        check_url("https://169.254.169.254/x", allow, fake_resolve)


# --- signatures ----------------------------------------------------------------------------


def merchant(secret: str, previous: str | None = None, rotated: datetime | None = None) -> Merchant:
    return Merchant("m-1", "https://hooks.example.com/x", True, None, secret, previous, rotated)


def test_the_signature_verifies_with_standardwebhooks() -> None:
    secret = new_secret()
    body = encode_body({"type": "violation.raised", "data": {"order_id": "o1"}})
    headers = signed_headers("alrt_1", body, [secret], datetime.now(UTC))
    assert Webhook(secret).verify(body, headers) == {
        "type": "violation.raised",
        "data": {"order_id": "o1"},
    }
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(body, headers)


def test_during_a_rotation_both_secrets_verify_and_after_the_grace_only_the_new() -> None:
    old, new = new_secret(), new_secret()
    now = datetime.now(UTC)
    body = encode_body({"data": {}})
    grace = timedelta(hours=24)
    during = signing_secrets(merchant(new, old, now - timedelta(hours=1)), now, grace)
    headers = signed_headers("alrt_2", body, during, now)
    assert len(headers["webhook-signature"].split(" ")) == 2
    Webhook(old).verify(body, headers)
    Webhook(new).verify(body, headers)
    after = signing_secrets(merchant(new, old, now - timedelta(hours=25)), now, grace)
    headers = signed_headers("alrt_2", body, after, now)
    Webhook(new).verify(body, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(old).verify(body, headers)


# --- the outbox on SQLite: per-order claims ------------------------------------------------


def outcome(order_id: str, kind: str, minute: int, merchant_id: str = "m-1") -> Outcome:
    return Outcome(
        kind=kind,  # type: ignore[arg-type]
        rule="collection_overdue",
        order_id=order_id,
        merchant_id=merchant_id,
        at=NOW - timedelta(hours=1) + timedelta(minutes=minute),
        clause="2.1.1 / 3.2.1(1)",
        deadline=NOW - timedelta(hours=1),
    )


def add_alerts(engine: Engine, *outcomes: Outcome) -> None:
    with sql_uow(engine) as uow:
        for made in outcomes:
            uow.alerts.add(made, created_at=NOW - timedelta(minutes=5))
        uow.commit()


def claimable(engine: Engine, now: datetime = NOW) -> list[str]:
    with outbox(engine) as box:
        return [f"{a.order_id}:{a.attempts}" for a in box.due(now, 100)]


def test_claims_keep_each_orders_alerts_in_order(sqlite_engine: Engine) -> None:
    # Given o1's violation and retraction, and o2's violation, all due
    add_alerts(
        sqlite_engine,
        outcome("o1", "violation", 0),
        outcome("o2", "violation", 1),
        outcome("o1", "retraction", 2),
    )
    # Then only each order's first is claimable
    assert claimable(sqlite_engine) == ["o1:0", "o2:0"]
    with outbox(sqlite_engine) as box:
        first = box.due(NOW, 100)
        box.lease([a.id for a in first], NOW + timedelta(minutes=5))
    # While o1's violation is in flight (and even once its lease ran out) o1's retraction waits
    assert claimable(sqlite_engine) == []
    assert claimable(sqlite_engine, NOW + timedelta(minutes=6)) == ["o1:1", "o2:1"]
    # When the violation is delivered, the retraction goes next
    with outbox(sqlite_engine) as box:
        assert box.record_delivered(first[0].alert_id, 200, NOW)
    assert claimable(sqlite_engine, NOW + timedelta(minutes=6)) == ["o1:0", "o2:1"]


def test_a_failed_alert_does_not_hold_back_the_rest_of_its_order(sqlite_engine: Engine) -> None:
    add_alerts(sqlite_engine, outcome("o1", "violation", 0), outcome("o1", "retraction", 2))
    with outbox(sqlite_engine) as box:
        first = box.due(NOW, 100)[0]
        box.lease([first.id], NOW)
        assert box.record(first.alert_id, 1, NOW, "failed", last_status=400)
    assert claimable(sqlite_engine) == ["o1:0"]


def test_the_relay_leases_sends_waits_for_an_endpoint_and_parks_disabled(
    sqlite_engine: Engine,
) -> None:
    with outbox(sqlite_engine) as box:
        box.save_endpoint("m-1", "https://hooks.example.com/x", new_secret())
        box.save_endpoint("m-off", "https://hooks.example.com/y", new_secret())
        box.disable("m-off", "HTTP 410")
    add_alerts(
        sqlite_engine,
        outcome("o1", "violation", 0, "m-1"),
        outcome("o2", "violation", 0, "m-none"),
        outcome("o3", "violation", 0, "m-off"),
    )
    sent: list[tuple[str, int, datetime]] = []
    assert relay_once(sqlite_engine, NOW, AlertConfig(), lambda *a: sent.append(a)) == 3
    with outbox(sqlite_engine) as box:
        alerts = {a.order_id: a for a in box.listing(False, None, 10)}
    assert [(s[0], s[1]) for s in sent] == [(alerts["o1"].alert_id, 1)]
    assert alerts["o1"].attempts == 1 and alerts["o1"].next_attempt_at > NOW
    assert alerts["o2"].state == "pending" and alerts["o2"].next_attempt_at > NOW
    assert alerts["o3"].state == "disabled"
    # once m-none registers, its alert goes out at once
    with outbox(sqlite_engine) as box:
        assert box.save_endpoint("m-none", "https://hooks.example.com/z", new_secret())
        assert box.release("m-none", NOW) == 1


# --- whole deliveries ----------------------------------------------------------------------


class Receiver:
    """A scripted receiver behind httpx's MockTransport, keeping every request."""

    def __init__(self, *answers: httpx.Response) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


@pytest.fixture()
def one_alert(sqlite_engine: Engine) -> Iterator[tuple[Engine, str, str]]:
    add_alerts(sqlite_engine, outcome("o1", "violation", 0))
    secret = new_secret()
    with outbox(sqlite_engine) as box:
        box.save_endpoint("m-1", "https://hooks.example.com/slatimer", secret)
        alert_id = box.due(NOW, 1)[0].alert_id
    yield sqlite_engine, alert_id, secret


def delivery(engine: Engine, receiver: Receiver, clock: VirtualClock) -> Delivery:
    client = httpx.Client(transport=httpx.MockTransport(receiver), follow_redirects=False)
    config = AlertConfig(retry_base=1.0, retry_cap=60.0, max_attempts=3)
    return Delivery(engine, clock, config, client, fake_resolve, random.Random(5))


def attempt(engine: Engine, sender: Delivery, clock: VirtualClock) -> str:
    """One relay pass at the clock's time and the delivery of what it claimed."""
    claimed: list[tuple[str, int, datetime]] = []
    relay_once(engine, clock.now(), sender.config, lambda *a: claimed.append(a))
    assert len(claimed) == 1, "exactly one alert due"
    return deliver(sender, *claimed[0])


def state_of(engine: Engine, alert_id: str) -> tuple[str, int, int | None, str | None]:
    with outbox(engine) as box:
        alert = box.alert(alert_id)
    assert alert is not None
    return alert.state, alert.attempts, alert.last_status, alert.last_error


def test_a_retried_alert_goes_out_byte_identical_under_one_id(
    one_alert: tuple[Engine, str, str],
) -> None:
    engine, alert_id, secret = one_alert
    receiver = Receiver(httpx.Response(503, text="busy " * 100), httpx.Response(204))
    clock = VirtualClock(NOW)
    sender = delivery(engine, receiver, clock)
    assert attempt(engine, sender, clock) == "retry"
    state, attempts, status, error = state_of(engine, alert_id)
    assert (state, attempts, status) == ("pending", 1, 503)
    assert error is not None and error.startswith("HTTP 503: busy") and len(error) <= 256
    clock.advance_to(NOW + timedelta(seconds=2))
    assert attempt(engine, sender, clock) == "delivered"
    first, second = receiver.requests
    assert first.content == second.content
    assert first.headers["webhook-id"] == second.headers["webhook-id"] == alert_id
    assert first.headers["host"] == "hooks.example.com" and str(first.url.host) == PUBLIC
    assert state_of(engine, alert_id)[:3] == ("delivered", 2, 204)


def test_410_disables_the_endpoint_and_parks_its_alerts(
    one_alert: tuple[Engine, str, str],
) -> None:
    engine, alert_id, _ = one_alert
    clock = VirtualClock(NOW)
    assert attempt(engine, delivery(engine, Receiver(httpx.Response(410)), clock), clock) == (
        "disabled"
    )
    with outbox(engine) as box:
        found = box.merchant("m-1")
        assert found is not None and not found.enabled and "410" in (found.disabled_reason or "")
        assert box.enable("m-1", NOW) == 1
    assert state_of(engine, alert_id)[:2] == ("pending", 0)


@pytest.mark.parametrize(
    ("answers", "state"),
    [
        ([httpx.Response(400, text="bad")], "failed"),
        ([httpx.Response(302, headers={"location": "http://10.0.0.1/"})], "failed"),
        ([httpx.Response(500)] * 3, "failed"),  # max_attempts = 3
    ],
)
def test_permanent_errors_and_the_last_attempt_park_the_alert_as_failed(
    one_alert: tuple[Engine, str, str], answers: list[httpx.Response], state: str
) -> None:
    engine, alert_id, _ = one_alert
    clock = VirtualClock(NOW)
    sender = delivery(engine, Receiver(*answers), clock)
    for number in range(len(answers)):
        clock.advance_to(NOW + timedelta(minutes=number))
        attempt(engine, sender, clock)
    assert state_of(engine, alert_id)[0] == state
    with outbox(engine) as box:
        assert box.retry(None, NOW) == 1
    assert state_of(engine, alert_id)[:2] == ("pending", 0)


def test_a_connection_error_is_retried_and_a_stale_task_does_nothing(
    one_alert: tuple[Engine, str, str],
) -> None:
    engine, alert_id, _ = one_alert

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    clock = VirtualClock(NOW)
    client = httpx.Client(transport=httpx.MockTransport(refuse))
    sender = Delivery(engine, clock, AlertConfig(retry_base=1.0), client, fake_resolve)
    claimed: list[tuple[str, int, datetime]] = []
    relay_once(engine, clock.now(), sender.config, lambda *a: claimed.append(a))
    assert deliver(sender, *claimed[0]) == "retry"
    assert "ConnectError" in (state_of(engine, alert_id)[3] or "")
    assert deliver(sender, *claimed[0]) == "stale"  # the same task delivered again
    assert state_of(engine, alert_id)[:2] == ("pending", 1)


def test_a_url_that_now_resolves_inside_is_refused_at_send_time(
    one_alert: tuple[Engine, str, str],
) -> None:
    engine, alert_id, _ = one_alert
    receiver = Receiver(httpx.Response(200))
    clock = VirtualClock(NOW)
    sender = delivery(engine, receiver, clock)
    sender.resolve = lambda host, port: [ipaddress.ip_address("10.9.9.9")]  # rebinding
    assert attempt(engine, sender, clock) == "failed"
    assert receiver.requests == []
    assert (state_of(engine, alert_id)[3] or "").startswith("refused:")


# --- the CLI and secrets -------------------------------------------------------------------


def run_cli(args: list[str]) -> str:
    from worker.cli.main import app

    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return result.output


def test_secrets_are_printed_once_and_never_listed_or_logged(
    sqlite_engine: Engine, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SLATIMER_DATABASE_URL", str(sqlite_engine.url))
    monkeypatch.setenv("SLATIMER_WEBHOOK_ALLOW", "127.0.0.1")
    add_alerts(sqlite_engine, outcome("o1", "violation", 0))
    with structlog.testing.capture_logs() as logs:
        added = run_cli(["merchants", "add", "m-1", "--url", "http://127.0.0.1:9/hook"])
        secret = added.split("keep it safe): ")[1].strip()
        rotated = run_cli(["merchants", "rotate-secret", "m-1"])
        new = rotated.split("keep it safe): ")[1].strip()
        listed = run_cli(["merchants", "list", "--json"])
        _deliver_once(sqlite_engine)
    assert secret.startswith("whsec_") and new.startswith("whsec_") and secret != new
    assert '"enabled":true' in listed and "127.0.0.1:9" in listed
    text = repr(logs) + listed + capsys.readouterr().err
    assert secret not in text and new not in text
    assert "alert attempt" in text, "the delivery logged its attempt"


def _deliver_once(engine: Engine) -> None:
    clock = VirtualClock(NOW)
    sender = delivery(engine, Receiver(httpx.Response(200)), clock)
    sender.config = AlertConfig(allow=Allow.parse("127.0.0.1"))
    assert attempt(engine, sender, clock) == "delivered"


def test_an_unsafe_url_is_refused_at_registration(
    sqlite_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLATIMER_DATABASE_URL", str(sqlite_engine.url))
    monkeypatch.delenv("SLATIMER_WEBHOOK_ALLOW", raising=False)
    from worker.cli.main import app

    result = CliRunner().invoke(app, ["merchants", "add", "m-1", "--url", "https://127.0.0.1/"])
    assert result.exit_code != 0 and "non-public" in result.output
