"""Retry pacing as a small pure function (after dramatiq's compute_backoff)."""

from __future__ import annotations

import random


def compute_backoff(
    attempt: int, base: float = 0.5, cap: float = 30.0, jitter: random.Random | None = None
) -> float:
    """Seconds to wait before retry number `attempt` (1-based): exponential, capped, with
    "full jitter" so that many processes reconnecting after an outage do not stampede."""
    ceiling = min(cap, base * 2 ** max(attempt - 1, 0))
    return (jitter or random).uniform(ceiling / 2, ceiling)
