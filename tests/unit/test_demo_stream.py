"""The demo's compressed stream keeps the example's order and shape under the demo policy."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson

from config.policy import load_policy
from config.settings import DEFAULT_POLICY, DEMO_POLICY
from worker.cli.demo import SCALE, arrival_order, compress
from worker.service.replay import replay_lines

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "day-of-orders.jsonl"
START = datetime(2030, 1, 1, tzinfo=UTC)


def test_an_hour_of_the_rules_is_half_a_second_in_the_demo_policy() -> None:
    demo, real = load_policy(DEMO_POLICY), load_policy(DEFAULT_POLICY)
    assert demo.limits.spot_collection == real.limits.spot_collection * SCALE
    assert demo.limits.stockout_contact == real.limits.stockout_contact * SCALE
    assert demo.repeat_window == real.repeat_window * SCALE
    assert demo.limits.trace_gap == real.limits.trace_gap * SCALE
    assert demo.warning_leads["collection_overdue"] == tuple(
        lead * SCALE for lead in real.warning_leads["collection_overdue"]
    )


def test_compressed_stream_gives_the_same_outcomes_as_the_original_log() -> None:
    lines = EXAMPLE.read_bytes().splitlines()
    sends = arrival_order(lines, compress(lines, START))
    kept = {orjson.loads(body)["event_id"] for _at, body in sends}
    in_span = [line for line in lines if orjson.loads(line)["event_id"] in kept]
    untraced = load_policy(DEFAULT_POLICY).model_copy(update={"trace_checks": False})
    original = replay_lines(in_span, untraced)  # the demo leaves 3.3(1)/(2) out
    compressed = replay_lines([body for _at, body in sends], load_policy(DEMO_POLICY))
    assert compressed.points_by_merchant() == original.points_by_merchant()
    assert [(o.kind, o.rule, o.order_id) for o in compressed.in_order()] == [
        (o.kind, o.rule, o.order_id) for o in original.in_order()
    ]


def test_sends_never_go_back_in_time_and_keep_the_log_order() -> None:
    lines = EXAMPLE.read_bytes().splitlines()
    sends = arrival_order(lines, compress(lines, START))
    times = [at for at, _body in sends]
    assert times == sorted(times)
    streamed = [orjson.loads(body)["event_id"] for _at, body in sends]
    in_span = [
        orjson.loads(line)["event_id"]
        for line in lines
        if orjson.loads(line)["event_id"] in set(streamed)
    ]
    assert streamed == in_span and len(streamed) > 0.8 * len(lines)
    assert times[-1] - times[0] < timedelta(seconds=110)  # "about two minutes" in all
