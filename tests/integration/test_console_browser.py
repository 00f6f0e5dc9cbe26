"""The console in a real browser (Debian's chromium through chromedriver, via Selenium): log in,
watch an at-risk order count down, open its timeline; then the operator view. Screenshots go to
the test's temporary directory, or to SLATIMER_CONSOLE_SCREENSHOTS when set (docs/ keeps them).

Locally the test skips when chromium or chromedriver is missing; in CI it fails (`make browser`
installs them)."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy import Engine

from config.settings import Settings
from models.policy import Policy
from store.sql.engine import session_factory
from store.sql.tables import DeadLetterRow
from tests.builders import H, collected, created
from tests.conftest import run, server_missing, sql_uow
from worker.api.keys import issue_key
from worker.console.server import Running, serve_in_thread

pytestmark = pytest.mark.integration

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,1700",
]
OPERATOR_KEY = "operator-key-for-the-browser-test"


@pytest.fixture()
def browser() -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not path.exists()]
    if missing:
        server_missing("the browser", FileNotFoundError(", ".join(missing)))
    profile = tempfile.mkdtemp(prefix="slatimer-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in [*FLAGS, f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    driver.implicitly_wait(10)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture()
def console(sqlite_engine: Engine, policy: Policy) -> Iterator[tuple[Running, str]]:
    """m-1's b1 (and m-2's z1) is 30 min from its 120 h collection deadline; b2 and b3
    breached it (b3's violation withdrawn by a late scan); one dead letter waits. Served on a
    free port."""
    now = datetime.now(UTC)
    events = [
        created("b2", now - 200 * H, "m-1"),
        created("b3", now - 200 * H, "m-1"),
        created("b4", now - 79 * H, "m-1"),  # the clock passes b2's and b3's deadlines
        collected("b3", now - 85 * H),  # a scan from before b3's deadline, learnt after it
        created("b1", now - 119.5 * H, "m-1"),
        created("z1", now - 119.5 * H, "m-2"),
    ]
    run(events, policy, until=now, uow=sql_uow(sqlite_engine))
    with session_factory(sqlite_engine)() as db:
        key = issue_key(db, "m-1")
        reason = "order.created: merchant_id is required"
        db.add(
            DeadLetterRow(
                received_at=now,
                source="slatimer.orders",
                field="merchant_id",
                reason=reason,
                body=b"{}",
            )
        )
        db.commit()
    settings = Settings(operator_api_key=SecretStr(OPERATOR_KEY))
    running = serve_in_thread(sqlite_engine, settings)
    try:
        yield running, key
    finally:
        running.stop()


def log_in(driver: Any, url: str, key: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(f"{url}/login")
    driver.find_element(By.ID, "key").send_keys(key)
    driver.find_element(By.ID, "login").click()
    # the click returns before the redirect lands; a refused key stays on the login page
    WebDriverWait(driver, 10).until(lambda d: not d.current_url.endswith("/login"))


def screenshot(driver: Any, name: str, tmp_path: Path) -> Path:
    folder = Path(os.environ.get("SLATIMER_CONSOLE_SCREENSHOTS") or tmp_path)
    path = folder / name
    assert driver.save_screenshot(str(path)), path
    return path


def test_a_merchant_logs_in_watches_an_order_count_down_and_opens_its_timeline(
    browser: Any, console: tuple[Running, str], tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    running, key = console
    # Given m-1 logged in with its key
    log_in(browser, running.url, key)
    assert browser.current_url.endswith("/console/merchants/m-1")
    # When it reads b1's countdown twice, a couple of seconds apart
    countdown = browser.find_element(By.CSS_SELECTOR, "#at-risk time.countdown")
    row = countdown.find_element(By.XPATH, "./ancestor::tr").text
    assert "b1" in row and "collection_overdue" in row and "2.1.1 / 3.2.1(1)" in row
    first = countdown.text
    time.sleep(2.5)
    second = countdown.text
    # Then the clock has moved: 29 min and some seconds left, fewer on the second read
    assert re.fullmatch(r"(29|30)m \d\ds", first) and first != second, (first, second)
    assert browser.find_element(By.CSS_SELECTOR, "#points-chart canvas")  # uPlot drew it
    screenshot(browser, "console-merchant.png", tmp_path)

    # When it opens that order: its timeline, with the clock still running
    countdown.find_element(By.XPATH, "./ancestor::tr//a").click()
    assert browser.current_url.endswith("/console/orders/b1")
    timeline = browser.find_element(By.ID, "timeline").text
    assert "order.created" in timeline and "collection_overdue" in timeline
    assert browser.find_element(By.CSS_SELECTOR, "#clocks time.countdown").text
    screenshot(browser, "console-order.png", tmp_path)

    # And b3's timeline shows its violation and the retraction with its evidence
    browser.get(f"{running.url}/orders/b3")
    timeline = browser.find_element(By.ID, "timeline").text
    assert "collection_overdue withdrawn" in timeline and "met on time by event" in timeline

    # And another merchant's order is not found for it
    browser.get(f"{running.url}/orders/z1")  # m-2's
    assert "Not found" in browser.find_element(By.TAG_NAME, "h1").text


def test_the_operator_sees_the_backlog_the_dead_letters_and_the_merchants(
    browser: Any, console: tuple[Running, str], tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    running, _key = console
    log_in(browser, running.url, OPERATOR_KEY)
    assert browser.current_url.endswith("/console/operator")
    assert "collection_overdue" in browser.find_element(By.ID, "backlog").text
    assert "merchant_id is required" in browser.find_element(By.ID, "dlq").text
    assert "m-1" in browser.find_element(By.ID, "nearest").text
    screenshot(browser, "console-operator.png", tmp_path)
