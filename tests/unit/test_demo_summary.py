"""The demo's closing table, its stream cut and its webhook receiver."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import httpx
import orjson
import pytest
from typer.testing import CliRunner

from worker.alerts.webhooks import Allow, UnsafeUrl, check_url, new_secret, signed_headers
from worker.cli.demo import (
    HOUR_IN_DEMO,
    arrival_order,
    compress,
    demo_env,
    demo_stream,
    replay_demo,
    replayed_summary,
)
from worker.cli.demo_receiver import Receiver
from worker.cli.main import app

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "day-of-orders.jsonl"
START = datetime(2030, 1, 1, tzinfo=UTC)


def test_the_summary_counts_standing_outcomes_and_points_per_merchant() -> None:
    header, *rows = replayed_summary(EXAMPLE, START)
    assert header.split() == ["merchant", "warnings", "violations", "escalations", "points"]
    table = {row.split()[0]: [int(cell) for cell in row.split()[1:]] for row in rows}
    assert set(table) == {"acme-us", "bluebird", "coastal", "dune-goods"}
    lines = EXAMPLE.read_bytes().splitlines()
    sends = arrival_order(lines, compress(lines, START))
    result, _uow = replay_demo([body for _at, body in sends], sends[-1][0] + HOUR_IN_DEMO)
    assert {m: cells[3] for m, cells in table.items()} == result.points_by_merchant()
    violations = [o for o in result.outcomes if o.kind == "violation"]
    retracted = [o for o in result.outcomes if o.kind == "retraction" and o.points]
    for merchant, cells in table.items():
        mine = [o for o in violations if o.merchant_id == merchant]
        withdrawn = [o for o in retracted if o.merchant_id == merchant]
        assert cells[1] == len(mine) - len(withdrawn), merchant


def test_replay_only_covers_the_stream_the_live_demo_sends() -> None:
    lines = EXAMPLE.read_bytes().splitlines()
    sends = arrival_order(lines, compress(lines, START))
    cut = demo_stream(lines)
    assert len(cut) < len([line for line in lines if line.strip()])  # the last deliveries
    assert [orjson.loads(b)["event_id"] for _at, b in sends] == [
        orjson.loads(line)["event_id"] for line in cut
    ]
    live, _uow = replay_demo([body for _at, body in sends], sends[-1][0] + HOUR_IN_DEMO)

    result = CliRunner().invoke(app, ["demo", "--replay-only"])
    assert result.exit_code == 0, result.stderr
    printed = result.stdout.split("points per merchant:")[1].split()
    points = dict(zip(printed[::2], map(int, printed[1::2]), strict=True))
    assert points == live.points_by_merchant()


def test_data_dir_that_holds_an_earlier_demo_is_refused(tmp_path: Path) -> None:
    (tmp_path / "slatimer.db").touch()
    result = CliRunner().invoke(app, ["demo", "--data-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert "already holds a demo's data" in result.stderr


def _post(receiver: Receiver, merchant: str, secret: str) -> int:
    body = orjson.dumps({"type": "violation", "data": _data()})
    headers = signed_headers("alert-1", body, [secret], datetime.now(UTC))
    return httpx.post(receiver.url(merchant), content=body, headers=headers).status_code


def _data() -> dict[str, str]:
    return {"kind": "violation", "rule": "collection_overdue", "order_id": "ord-1"}


def test_the_receiver_accepts_alerts_signed_with_the_merchants_secret() -> None:
    printed: list[str] = []
    receiver = Receiver(["coastal", "acme-us"], printed.append)
    receiver.start()
    try:
        assert _post(receiver, "coastal", receiver.secrets["coastal"]) == 204
        assert _post(receiver, "coastal", receiver.secrets["acme-us"]) == 401
        assert _post(receiver, "coastal", new_secret()) == 401
    finally:
        receiver.stop()
    assert (receiver.verified, receiver.refused) == (1, 2)
    assert "coastal" in printed[0] and "collection_overdue" in printed[0]
    assert printed[0].endswith("signature ok")
    assert "REFUSED" in printed[1]
    assert receiver.tally().endswith(": 1 signed and verified, 2 refused")


def test_only_the_demos_environment_lets_alerts_go_to_the_loopback_receiver(
    tmp_path: Path,
) -> None:
    receiver = Receiver(["coastal"], print)
    try:
        url = receiver.url("coastal")
        check_url(url, Allow.parse(demo_env(tmp_path)["SLATIMER_WEBHOOK_ALLOW"]))
        with pytest.raises(UnsafeUrl):
            check_url(url, Allow.parse(""))
    finally:
        receiver.stop()


def test_a_missing_event_log_leaves_no_demo_folder_behind(tmp_path: Path) -> None:
    data = tmp_path / "demo"
    missing = tmp_path / "no-such.jsonl"
    result = CliRunner().invoke(app, ["demo", "--events", str(missing), "--data-dir", str(data)])
    assert result.exit_code == 2
    assert result.stderr.startswith(f"slatimer: cannot read {missing}: No such file")
    assert not data.exists()
