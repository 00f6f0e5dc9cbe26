"""Alerts to merchants: the versioned webhook body for each outcome, and its stable id.

The id is derived from what the alert is about (order, kind, rule, subject, deadline), so the
same alert always goes out under the same `webhook-id` — a receiver de-duplicates on it — and
the outbox can refuse to hold it twice.
"""

from __future__ import annotations

import hashlib
from typing import Any

from models.outcomes import Outcome, iso

ALERT_SCHEMA_VERSION = 1
EVENT_TYPES = {
    "warning": "deadline.warning",
    "violation": "violation.raised",
    "escalation": "escalation.raised",
    "retraction": "outcome.retracted",
}


def alert_id(outcome: Outcome) -> str:
    deadline = iso(outcome.deadline) if outcome.deadline else ""
    identity = "|".join(
        (outcome.order_id, outcome.kind, outcome.rule, outcome.subject, deadline, iso(outcome.at))
    )
    return "alrt_" + hashlib.sha256(identity.encode()).hexdigest()[:32]


def alert_body(outcome: Outcome) -> dict[str, Any]:
    """The webhook payload (schema documented in docs/alerts.md), Standard Webhooks shaped:
    `type`, `timestamp` (when it happened) and `data`."""
    return {
        "type": EVENT_TYPES[outcome.kind],
        "timestamp": iso(outcome.at),
        "data": {
            "schema_version": ALERT_SCHEMA_VERSION,
            "alert_id": alert_id(outcome),
            "kind": outcome.kind,
            "rule": outcome.rule,
            "clause": outcome.clause,
            "category": outcome.category,
            "order_id": outcome.order_id,
            "merchant_id": outcome.merchant_id,
            "subject": outcome.subject or None,
            "deadline": iso(outcome.deadline) if outcome.deadline else None,
            "at": iso(outcome.at),
            "severity": outcome.severity,
            "points": outcome.points,
            "evidence": outcome.evidence,
        },
    }
