"""4.1 / 4.2: rules change by announcement and apply by their effective date; the what-if."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import orjson
from typer.testing import CliRunner

from config.policy import load_policies
from config.settings import DEFAULT_POLICY
from models.policy import Policy
from tests.builders import DAY, T0, H, S, doc
from tests.builders import created as order_created
from tests.conftest import run
from worker.cli.main import app

EFFECTIVE = T0 + 10 * DAY


def _stricter(directory: Path) -> Path:
    """A new version from EFFECTIVE on: collection within 96 h, out-of-stock 6 / 10 points."""
    text = DEFAULT_POLICY.read_text()
    text = text.replace(
        'effective_from = "2022-05-14T00:00:00+08:00"',
        f'effective_from = "{EFFECTIVE.isoformat()}"',
    )
    text = text.replace('spot_collection = "120h"', 'spot_collection = "96h"')
    text = text.replace(
        "[points.out_of_stock]\ngeneral = 4\nserious = 8",
        "[points.out_of_stock]\ngeneral = 6\nserious = 10",
    )
    path = directory / "2026-03-12.toml"
    path.write_text(text)
    return path


def _versions(directory: Path) -> Policy:
    loaded = load_policies([DEFAULT_POLICY, _stricter(directory)])
    return loaded.model_copy(update={"trace_checks": False})


def test_4_1_an_order_created_before_the_effective_date_keeps_the_old_rules(
    tmp_path: Path,
) -> None:
    [violation] = run(
        [order_created("o1", EFFECTIVE - S)], _versions(tmp_path), EFFECTIVE + 9 * DAY
    )
    assert violation["at"] == (EFFECTIVE - S + 120 * H).isoformat().replace("+00:00", "Z")
    assert violation["points"] == 4


def test_4_1_an_order_created_at_the_effective_date_takes_the_new_rules(tmp_path: Path) -> None:
    [violation] = run([order_created("o1", EFFECTIVE)], _versions(tmp_path), EFFECTIVE + 9 * DAY)
    assert violation["at"] == (EFFECTIVE + 96 * H).isoformat().replace("+00:00", "Z")
    assert violation["points"] == 6


def test_4_2_versions_load_in_any_order_and_the_newest_is_in_force(tmp_path: Path) -> None:
    newest_first = load_policies([_stricter(tmp_path), DEFAULT_POLICY])
    assert newest_first.effective_from == EFFECTIVE
    assert newest_first.version_for(EFFECTIVE - S).limits.spot_collection == timedelta(hours=120)


def test_replay_compare_prints_what_a_rule_change_would_change(tmp_path: Path) -> None:
    # Given one order created after the new version's effective date
    body = doc(
        "order.created",
        "o1",
        EFFECTIVE + H,
        merchant_id="m-1",
        items=[{"sku": "a", "quantity": 1}],
        ship_to={"country": "CN", "postcode": "200000"},
    )
    log = tmp_path / "events.jsonl"
    log.write_bytes(orjson.dumps(body) + b"\n")
    new = _stricter(tmp_path)
    # When replayed under the new rules compared with the old
    result = CliRunner().invoke(
        app,
        [
            "replay",
            str(log),
            "--until",
            (EFFECTIVE + 9 * DAY).isoformat(),
            "--policy",
            str(DEFAULT_POLICY),
            "--policy",
            str(new),
            "--compare",
            str(DEFAULT_POLICY),
        ],
    )
    assert result.exit_code == 0, result.output
    changes = [orjson.loads(line) for line in result.stdout.splitlines()]
    breaches = [c for c in changes if c.get("kind") == "violation"]
    assert [(c["change"], c["points"]) for c in breaches] == [("removed", 4), ("added", 6)]
    assert changes[-1] == {"change": "points", "merchant_id": "m-1", "old": 4, "new": 6, "delta": 2}


def test_4_2_a_new_policy_file_takes_effect_without_a_restart(tmp_path: Path) -> None:
    import os

    from worker.service.bootstrap import PolicyFiles

    current = tmp_path / "policy.toml"
    current.write_text(DEFAULT_POLICY.read_text())
    files = PolicyFiles([current], check_every=0)
    assert files.current().limits.spot_collection == timedelta(hours=120)
    # When the file is replaced by a new version
    current.write_text(DEFAULT_POLICY.read_text().replace('"120h"', '"96h"'))
    os.utime(current, ns=(1, 2))  # a clearly different modification time
    assert files.current().limits.spot_collection == timedelta(hours=96)
    # And a broken file keeps the version in force
    current.write_text("this is not toml = [")
    os.utime(current, ns=(3, 4))
    assert files.current().limits.spot_collection == timedelta(hours=96)
