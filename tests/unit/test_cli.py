"""The `slatimer` command line: replay's output contract, errors, schema, db upgrade."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from sqlalchemy import inspect
from typer.testing import CliRunner

from config.policy import load_policy
from config.settings import DEFAULT_POLICY
from store.sql.engine import make_engine, session_factory
from store.sql.unit_of_work import SqlUnitOfWork
from tests.builders import T0, doc
from worker.cli.main import app
from worker.service.replay import replay_lines

runner = CliRunner()
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "day-of-orders.jsonl"


def _log(tmp_path: Path, lines: list[bytes]) -> Path:
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def _created(event_id: str, order_id: str) -> bytes:
    return orjson.dumps(
        doc(
            "order.created",
            order_id,
            T0,
            event_id=event_id,
            merchant_id="m-1",
            items=[{"sku": "a", "quantity": 1}],
            ship_to={"country": "CN", "postcode": "200000"},
        )
    )


def test_replay_reports_bad_lines_runs_the_rest_and_exits_1(tmp_path: Path) -> None:
    path = _log(
        tmp_path, [_created("e1", "o1"), b"{oops", _created("e2", "o2").replace(b"+00:00", b"")]
    )
    result = runner.invoke(app, ["replay", str(path), "--until", "2026-03-20T00:00:00Z"])
    assert result.exit_code == 1
    lines = [orjson.loads(line) for line in result.stdout.splitlines()]
    lines = [line for line in lines if line["kind"] != "warning"]
    assert [(o["order_id"], o["rule"], o["at"]) for o in lines] == [
        ("o1", "collection_overdue", "2026-03-07T09:00:00Z")
    ]
    assert "line 2: (message): not valid JSON" in result.stderr
    assert "line 3: occurred_at: Input should have timezone info" in result.stderr


def test_replay_with_summary_adds_points_per_merchant(tmp_path: Path) -> None:
    path = _log(tmp_path, [_created("e1", "o1"), _created("e2", "o2")])
    result = runner.invoke(
        app, ["replay", str(path), "--until", "2026-03-20T00:00:00Z", "--summary"]
    )
    assert result.exit_code == 0
    summary = orjson.loads(result.stdout.splitlines()[-1])["summary"]
    # both breach at the same instant: neither precedes the other, so both are general
    assert summary == {"events": 2, "points_by_merchant": {"m-1": 4 + 4}}


def test_replay_of_the_bundled_example_matches_the_readme() -> None:
    result = runner.invoke(app, ["replay", str(EXAMPLE), "--summary"])
    assert result.exit_code == 0, result.stderr
    *outcomes, summary = [orjson.loads(line) for line in result.stdout.splitlines()]
    breaches = [o for o in outcomes if o["kind"] != "warning"]
    assert len(breaches) == 47
    assert {o["kind"] for o in outcomes} == {"warning", "violation", "escalation", "retraction"}
    assert summary["summary"]["points_by_merchant"] == {
        "acme-us": 12,
        "bluebird": 44,
        "coastal": 66,
        "dune-goods": 40,
    }
    ats = [o["at"] for o in outcomes]
    assert ats == sorted(ats)


def test_replay_refuses_a_naive_until(tmp_path: Path) -> None:
    path = _log(tmp_path, [_created("e1", "o1")])
    result = runner.invoke(app, ["replay", str(path), "--until", "2026-03-20T00:00:00"])
    assert result.exit_code == 2
    assert "UTC offset" in result.stderr


def test_schema_prints_the_contract() -> None:
    result = runner.invoke(app, ["schema"])
    assert result.exit_code == 0
    assert orjson.loads(result.stdout)["title"] == "slatimer event contract v3"


def test_db_upgrade_creates_the_schema(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    monkeypatch.setenv("SLATIMER_DATABASE_URL", url)
    result = runner.invoke(app, ["db", "upgrade"])
    assert result.exit_code == 0, result.output
    tables = set(inspect(make_engine(url)).get_table_names())
    assert {"orders", "inbox", "deadlines", "outcomes", "retractions", "points_ledger"} <= tables


WORKING_TIME = EXAMPLE.parent / "working-time.jsonl"


def test_replay_prints_the_working_time_outcomes() -> None:
    # the example: an IPR complaint left unanswered over Lunar New Year, an inquiry received
    # Friday 05:59 US Eastern, a typhoon closure pausing another complaint's response period,
    # and a return requested after the 30-day window
    result = runner.invoke(app, ["replay", str(WORKING_TIME), "--until", "2026-04-01T00:00:00Z"])
    assert result.exit_code == 0, result.stderr
    lines = [orjson.loads(line) for line in result.stdout.splitlines()]
    assert [(o["kind"], o["rule"], o["order_id"], o["at"]) for o in lines] == [
        ("warning", "ipr_response_overdue", "ipr:IPR-2026-0042", "2026-02-22T16:00:00Z"),
        ("escalation", "ipr_response_overdue", "ipr:IPR-2026-0042", "2026-02-23T16:00:00Z"),
        ("escalation", "cs_reply_overdue", "cs:Q-7781", "2026-02-24T01:59:00Z"),
        ("warning", "ipr_response_overdue", "ipr:IPR-2026-0057", "2026-02-25T00:00:00Z"),
        ("escalation", "ipr_review_overdue", "ipr:IPR-2026-0042", "2026-03-06T00:00:00Z"),
        ("escalation", "return_window_closed", "o-9001", "2026-03-14T09:00:00Z"),
    ]
    assert "paused 8 h by closures" in lines[4]["evidence"]


def test_deadlines_shows_the_calendar_and_paused_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'slatimer.db'}"
    monkeypatch.setenv("SLATIMER_DATABASE_URL", url)
    assert runner.invoke(app, ["db", "upgrade"]).exit_code == 0
    engine = make_engine(url)
    lines = WORKING_TIME.read_bytes().splitlines()[:9]  # up to the typhoon closure
    replay_lines(lines, load_policy(DEFAULT_POLICY), uow=SqlUnitOfWork(session_factory(engine)))
    engine.dispose()

    result = runner.invoke(app, ["deadlines", "ipr:IPR-2026-0057"])
    assert result.exit_code == 0, result.stderr
    response = next(d for d in orjson.loads(result.stdout) if d["rule"] == "ipr_response_overdue")
    assert response["due_at"] == "2026-02-26T00:00:00Z"  # Thursday 08:00 HKT: 8 h paused
    assert response["state"] == "pending"
    assert response["calendar"].startswith("hk_working_days: working days in Asia/Hong_Kong")
    assert response["paused"] == [
        {"from": "2026-02-24T01:00:00Z", "until": "2026-02-24T09:00:00Z", "hours": 8.0}
    ]


@pytest.mark.parametrize(
    ("args", "env", "node"),
    [
        ([], {}, "slatimer@%h"),
        (["--hostname", "slatimer2@%h"], {}, "slatimer2@%h"),
        ([], {"SLATIMER_WORKER_NAME": "timers-b@%h"}, "timers-b@%h"),
    ],
    ids=["default", "option", "setting"],
)
def test_each_worker_process_runs_under_a_node_name_of_its_own(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    env: dict[str, str],
    node: str,
) -> None:
    # Given a migrated store, and Celery's worker_main recording its argv instead of running
    url = f"sqlite:///{tmp_path / 'w.db'}"
    monkeypatch.setenv("SLATIMER_DATABASE_URL", url)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert runner.invoke(app, ["db", "upgrade"]).exit_code == 0
    from tasks.app import app as celery

    started: list[list[str]] = []
    monkeypatch.setattr(celery, "worker_main", started.append)
    # When `slatimer worker` starts
    result = runner.invoke(app, ["worker", *args])
    # Then Celery is asked for that node name (two of one name are one node to Flower)
    assert result.exit_code == 0, result.output
    assert f"--hostname={node}" in started[0]
