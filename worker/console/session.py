"""The console's session cookie: `<digest>.<issued at>.<signature>`, HMAC-SHA256 signed.

It carries the SHA-256 of the API key the user logged in with (never the key itself), so each
request authenticates again exactly as the API does: a reissued merchant key or a changed
operator key ends the sessions opened with the old one.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import datetime, timedelta

COOKIE = "slatimer_console"


def sign(digest: str, issued_at: datetime, secret: bytes) -> str:
    payload = f"{digest}.{int(issued_at.timestamp())}"
    return f"{payload}.{_mac(payload, secret)}"


def verify(token: str, secret: bytes, max_age: timedelta, now: datetime) -> str | None:
    """The key digest in a cookie this secret signed within `max_age`, else None."""
    payload, _, mac = token.rpartition(".")
    digest, _, issued = payload.partition(".")
    if not (digest and issued.isdigit()) or not hmac.compare_digest(mac, _mac(payload, secret)):
        return None
    age = now.timestamp() - int(issued)
    return digest if 0 <= age <= max_age.total_seconds() else None


def _mac(payload: str, secret: bytes) -> str:
    raw = hmac.new(secret, payload.encode("ascii", "replace"), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")
