"""store/sql/batch.py `Window`: a timer group's merchant-wide sums, read once as a core and two
edges, answer every window ending in the group's span exactly as the per-question query does."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import Engine

from models.outcomes import LedgerEntry, Outcome
from store.sql.batch import Window, _read_window
from tests.builders import T0, H
from tests.conftest import sql_uow

WIDTH = timedelta(days=30)
LO, HI = T0, T0 + timedelta(seconds=1)
EDGES = [LO - WIDTH, LO - WIDTH + timedelta(milliseconds=500), HI - WIDTH, LO, HI]
"""Times on and between the boundaries, where an off-by-one would show."""


def _violation(order: str, at: object) -> Outcome:
    return Outcome(
        kind="violation", rule="r", order_id=order, merchant_id="m", at=at,  # type: ignore[arg-type]
        clause="x", category="c", points=1,
    )  # fmt: skip


def test_2_window_sums_equal_the_per_question_queries_on_and_around_its_edges(
    sqlite_engine: Engine,
) -> None:
    # Given violations and ledger points at the window's edges, inside and outside it
    times = [*EDGES, LO - WIDTH - H, T0 - 10 * H, HI + H]
    with sql_uow(sqlite_engine) as uow:
        for number, at in enumerate(times):
            uow.outcomes.record(_violation(f"o{number}", at))
            uow.ledger.add(LedgerEntry("m", f"o{number}", "r", "", at, "charge", number + 1, at))
        uow.commit()
    # When a window is read once for the group's span [LO, HI]
    with sql_uow(sqlite_engine) as uow:
        violations = Window(LO, HI, WIDTH, {"m"})
        points = Window(LO, HI, WIDTH, {"m"})
        _read_window(uow.session, violations, ("violations", "c"))
        _read_window(uow.session, points, ("ledger", ""))
        # Then every question ending in the span gets the database's own answer
        for until in [LO, LO + timedelta(milliseconds=500), HI]:
            since = until - WIDTH
            assert violations.covers("m", since, until) and points.covers("m", since, until)
            stored = uow.outcomes.any_violation_between("m", "c", since, until)
            expected = sum(since <= at < until for at in times)  # half-open, as the query
            assert violations.total("m", since, until, closed=False) == expected
            assert (expected > 0) == stored
            assert points.total("m", since, until, closed=True) == uow.ledger.standing(
                "m", since, until
            )


def test_2_questions_outside_the_span_or_of_another_merchant_are_not_covered() -> None:
    window = Window(LO, HI, WIDTH, {"m"})
    assert not window.covers("other", LO - WIDTH, LO)
    assert not window.covers("m", HI + H - WIDTH, HI + H)
    assert not window.covers("m", LO - 2 * WIDTH, LO)
