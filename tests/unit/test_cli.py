"""The `slatimer` command line: replay's output contract, errors, schema, db upgrade."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from sqlalchemy import inspect
from typer.testing import CliRunner

from store.sql import make_engine
from tests.builders import T0, doc
from worker.cli import app

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
    assert orjson.loads(result.stdout)["title"] == "slatimer event contract v2"


def test_db_upgrade_creates_the_schema(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    monkeypatch.setenv("SLATIMER_DATABASE_URL", url)
    result = runner.invoke(app, ["db", "upgrade"])
    assert result.exit_code == 0, result.output
    tables = set(inspect(make_engine(url)).get_table_names())
    assert {"orders", "inbox", "deadlines", "outcomes", "retractions", "points_ledger"} <= tables
