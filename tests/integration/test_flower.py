"""Flower and the worker's metrics port on real processes: a real `slatimer worker`, dispatcher
and `slatimer flower` on Redis and PostgreSQL; one overdue deadline is fired, and both Flower's
HTTP API and the worker's /metrics show it."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from kombu import Connection, Exchange, Queue
from sqlalchemy import Engine, func, select

from config.policy import load_policy
from store.sql.tables import OutcomeRow
from tests.builders import created
from tests.conftest import sql_uow
from tests.integration.test_api_metrics_pg import free_port, scrape
from tests.runtime import FAST_POLICY, processes, runtime_env, wait_for
from worker.service.handlers import record_event

pytestmark = pytest.mark.integration
AUTH = ("ops", "s3cret")


def overdue_order(engine: Engine) -> None:
    """An order whose 120 h collection (6 s under the fast policy) passed a second ago."""
    at = datetime.now(UTC) - timedelta(seconds=7)
    with sql_uow(engine) as uow:
        record_event(created("fl-1", at, "m-fl"), uow, at, load_policy(FAST_POLICY))
        uow.commit()


def flower_json(url: str, auth: Any = AUTH) -> Any:
    try:
        response = httpx.get(url, auth=auth, timeout=10)
    except httpx.HTTPError:
        return None
    return response.json() if response.status_code == 200 else None


def until(fetch: Callable[[], Any], timeout: float, what: str, logs: Callable[[], str]) -> Any:
    found: list[Any] = []
    try:
        wait_for(lambda: bool(found.append(fetch()) or found[-1]), timeout, what, every=0.5)
    except AssertionError:
        raise AssertionError(f"{what}\n{logs()}") from None
    return found[-1]


def test_flower_shows_the_worker_and_a_succeeded_check_task_and_the_worker_counts_it(
    pg_engine: Engine, redis_url: str, tmp_path: Path
) -> None:
    # Given an overdue deadline, and a worker, a dispatcher and Flower on a private timer queue
    overdue_order(pg_engine)
    queue = f"slatimer.test.timers.{uuid.uuid4().hex[:8]}"
    flower_port, metrics_port = free_port(), free_port()
    env = runtime_env(
        pg_engine.url.render_as_string(False),
        redis_url,
        SLATIMER_TIMER_QUEUE=queue,
        SLATIMER_FLOWER_BASIC_AUTH=":".join(AUTH),
        SLATIMER_REDISPATCH_GRACE="60",  # the deadline is overdue already: no re-arm while we look
    )
    flower = f"http://127.0.0.1:{flower_port}"
    try:
        with processes(env, tmp_path) as children:
            children.start("flower", "flower", "--port", str(flower_port), "--address", "127.0.0.1")
            children.env = {**env, "SLATIMER_METRICS_PORT": str(metrics_port)}
            children.start("worker")
            children.env = env
            # Then Flower lists a worker consuming our queue (its event stream is up by then)
            workers = until(
                lambda: ours(flower_json(f"{flower}/api/workers?refresh=1"), queue),
                60,
                "our worker in Flower",
                children.logs,
            )
            # When the deadline fires
            children.start("dispatcher")
            until(lambda: violations(pg_engine), 60, "the violation", children.logs)
            # Then Flower shows the succeeded check task
            tasks = until(
                lambda: succeeded(flower_json(f"{flower}/api/tasks?limit=1000")),
                60,
                "a SUCCEEDED slatimer.fire_deadlines in Flower",
                children.logs,
            )
            assert workers and tasks
            assert httpx.get(f"{flower}/api/workers", timeout=10).status_code == 401
            # And the worker's metrics port sums its pool's counts
            samples = scrape(httpx.get(f"http://127.0.0.1:{metrics_port}/metrics").text)
    finally:
        delete_queue(redis_url, queue)
    fired = ("slatimer_deadlines_fired_total", (("rule", "collection_overdue"),))
    lateness = ("slatimer_firing_lateness_seconds_count", (("rule", "collection_overdue"),))
    assert samples[fired] >= 1  # a check that finds the clock fired already counts too
    assert samples[lateness] == samples[fired]


def violations(engine: Engine) -> int:
    with engine.connect() as connection:
        query = select(func.count()).select_from(OutcomeRow).where(OutcomeRow.kind == "violation")
        return connection.scalar(query) or 0


def ours(workers: dict[str, Any] | None, queue: str) -> list[str]:
    """Names of the workers Flower shows consuming `queue`."""
    return [
        name
        for name, info in (workers or {}).items()
        if any(q.get("name") == queue for q in info.get("active_queues") or [])
    ]


def succeeded(tasks: dict[str, Any] | None) -> list[str]:
    return [
        task_id
        for task_id, task in (tasks or {}).items()
        if task.get("name") == "slatimer.fire_deadlines" and task.get("state") == "SUCCESS"
    ]


def delete_queue(url: str, name: str) -> None:
    with Connection(url) as connection:
        Queue(name, Exchange(name), routing_key=name)(connection.default_channel).delete()
