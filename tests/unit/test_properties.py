"""Property-based tests: replay is deterministic, redelivery is harmless, folding commutes."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from config.policy import load_policy
from config.settings import DEFAULT_POLICY
from models.events import Event, parse_document
from models.order import OrderState, apply
from tests.builders import T0, doc
from worker.service.replay import Replayer

POLICY = load_policy(DEFAULT_POLICY)
ORDERS = ("o1", "o2", "o3")


def _fields(kind: str, hour: int) -> dict[str, Any]:
    later = (T0 + timedelta(hours=hour + 50)).isoformat()
    return {
        "order.created": {
            "merchant_id": "m-1",
            "items": [{"sku": "a", "quantity": 1}],
            "ship_to": {"country": "CN", "postcode": "200000"},
        },
        "order.shipped": {"waybill_no": "JD1", "carrier": "JD_LOGISTICS"},
        "order.collected": {"waybill_no": "JD1", "carrier": "JD_LOGISTICS"},
        "order.stockout_declared": {},
        "order.consumer_contacted": {"outcome": "restock", "new_ship_by": later},
        "cancellation.requested": {"cancellation_id": "c1"},
        "cancellation.reviewed": {"cancellation_id": "c1", "decision": "rejected"},
        "customs.clearance_failed": {},
        "refund.completed": {},
    }[kind]


@st.composite
def event_logs(draw: st.DrawFn) -> list[Event]:
    """A few orders' lifecycles, each starting with its creation, events in arbitrary order."""
    kinds = st.sampled_from(
        [
            "order.shipped",
            "order.collected",
            "order.stockout_declared",
            "order.consumer_contacted",
            "cancellation.requested",
            "cancellation.reviewed",
            "customs.clearance_failed",
            "refund.completed",
        ]
    )
    events = []
    for number, order_id in enumerate(draw(st.lists(st.sampled_from(ORDERS), unique=True))):
        start = draw(st.integers(0, 200))
        events.append(("order.created", order_id, start, f"{order_id}-created"))
        for index, kind in enumerate(draw(st.lists(kinds, max_size=6))):
            hour = start + draw(st.integers(0, 250))
            events.append((kind, order_id, hour, f"{order_id}-{number}-{index}"))
    events = draw(st.permutations(events))
    return [
        parse_document(
            doc(kind, order_id, T0 + timedelta(hours=hour), event_id=eid, **_fields(kind, hour))
        )
        for kind, order_id, hour, eid in events
    ]


def _replay(events: list[Event]) -> list[dict[str, Any]]:
    replayer = Replayer(POLICY)
    for event in events:
        replayer.feed(event)
    return [o.as_json() for o in replayer.finish(T0 + timedelta(days=40)).in_order()]


@settings(max_examples=150, deadline=None)
@given(event_logs())
def test_replay_is_deterministic(events: list[Event]) -> None:
    assert _replay(events) == _replay(list(events))


@settings(max_examples=150, deadline=None)
@given(event_logs(), st.data())
def test_redelivering_events_anywhere_after_the_first_never_changes_outcomes(
    events: list[Event], data: st.DataObject
) -> None:
    redelivered = list(events)
    for event in data.draw(st.lists(st.sampled_from(events), max_size=8)) if events else []:
        first = redelivered.index(event)
        redelivered.insert(data.draw(st.integers(first + 1, len(redelivered))), event)
    assert _replay(redelivered) == _replay(events)


@settings(max_examples=150, deadline=None)
@given(event_logs(), st.randoms())
def test_folding_events_in_any_order_gives_the_same_state(events: list[Event], rnd: Any) -> None:
    shuffled = list(events)
    rnd.shuffle(shuffled)
    for order_id in ORDERS:
        mine = [e for e in events if e.order_id == order_id]
        theirs = [e for e in shuffled if e.order_id == order_id]
        assert _fold(order_id, mine) == _fold(order_id, theirs)


def _fold(order_id: str, events: list[Event]) -> OrderState:
    state = OrderState(order_id=order_id)
    for event in events:
        state = apply(state, event)
    return state


@settings(max_examples=150, deadline=None)
@given(event_logs())
def test_never_two_standing_violations_of_a_category_and_points_balance(
    events: list[Event],
) -> None:
    outcomes = _replay(events)
    standing: Counter[tuple[str, str]] = Counter()
    for outcome in outcomes:
        if outcome["kind"] in ("violation", "retraction") and outcome["category"]:
            step = 1 if outcome["kind"] == "violation" else -1
            standing[(outcome["order_id"], outcome["category"])] += step
    assert all(count in (0, 1) for count in standing.values())
    points = sum(o["points"] or 0 for o in outcomes)
    assert points >= 0


@settings(max_examples=150, deadline=None)
@given(event_logs())
def test_folding_leaves_earlier_states_as_they_were_and_round_trips_as_stored(
    events: list[Event],
) -> None:
    # Given every intermediate state of a fold, with a snapshot of each as a store keeps it
    for order_id in ORDERS:
        states = [OrderState(order_id=order_id)]
        snapshots = [states[0].model_dump(mode="json")]
        for event in (e for e in events if e.order_id == order_id):
            # When one more event is folded in
            states.append(apply(states[-1], event))
            snapshots.append(states[-1].model_dump(mode="json"))
        # Then no earlier state changed, and each reads back from its stored form as it was
        assert [s.model_dump(mode="json") for s in states] == snapshots
        assert [OrderState.model_validate(snap) for snap in snapshots] == states
