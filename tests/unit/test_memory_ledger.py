"""The memory store's ledger answers a merchant's rolling window from prefix sums: the same
totals as summing every entry, on the window's edges, out of time order and after rollback."""

from __future__ import annotations

from datetime import timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from models.outcomes import LedgerEntry
from store.memory import MemoryUnitOfWork
from tests.builders import T0, H

# (merchant, hour of the outcome, points, committed?)
ENTRIES = st.lists(
    st.tuples(
        st.sampled_from(["m-1", "m-2"]),
        st.integers(0, 40),
        st.integers(-8, 25),
        st.booleans(),
    ),
    max_size=30,
)


def _entry(number: int, merchant: str, hour: int, points: int) -> LedgerEntry:
    at = T0 + hour * H
    return LedgerEntry(merchant, f"o{number}", "rule", "", at, "charge", points, at)


def _brute_force(kept: list[LedgerEntry], merchant: str, since_h: int, until_h: int) -> int:
    since, until = T0 + since_h * H, T0 + until_h * H
    return sum(
        e.points for e in kept if e.merchant_id == merchant and since <= e.outcome_at <= until
    )


@settings(max_examples=150, deadline=None)
@given(entries=ENTRIES, since_h=st.integers(-1, 41), span_h=st.integers(0, 42))
def test_standing_is_the_sum_of_the_entries_in_the_window_after_rollbacks(
    entries: list[tuple[str, int, int, bool]], since_h: int, span_h: int
) -> None:
    # Given entries added one transaction each, some rolled back
    uow = MemoryUnitOfWork()
    kept: list[LedgerEntry] = []
    for number, (merchant, hour, points, commit) in enumerate(entries):
        entry = _entry(number, merchant, hour, points)
        with uow:
            uow.ledger.add(entry)
            if commit:
                uow.commit()
                kept.append(entry)
    # Then every window (edges included) holds what a scan of the kept entries finds
    for merchant in ("m-1", "m-2", "m-3"):
        until_h = since_h + span_h
        since, until = T0 + since_h * H, T0 + until_h * H
        expected = _brute_force(kept, merchant, since_h, until_h)
        assert uow.ledger.standing(merchant, since, until) == expected
        assert uow.ledger.standing(merchant, since, since - timedelta(seconds=1)) == 0
