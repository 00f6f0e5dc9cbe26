"""Webhook mechanics as small functions: the retry schedule, response classification,
Retry-After, URL safety (SSRF) and Standard Webhooks signing. No database, no Celery.

docs/alerts.md documents the schedule, the status handling and the safety rules.
"""

from __future__ import annotations

import base64
import ipaddress
import secrets
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from math import floor
from random import Random
from typing import Any, Literal

import httpx
import orjson
from standardwebhooks import Webhook

from store.sql.outbox import Merchant

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolve = Callable[[str, int], list[IpAddress]]
Verdict = Literal["delivered", "gone", "failed", "retry"]

RETRY_FACTOR = 4
"""Each retry's ceiling is 4x the previous one, up to the cap: with the default base of 30 s
and cap of 12 h the ten attempts' ceilings add to ~47 h, so full jitter averages ~24 h."""


def retry_delay(attempt: int, rng: Random, base: float = 30.0, cap: float = 43_200.0) -> float:
    """Seconds to wait after failed attempt number `attempt` (1-based): exponential backoff
    with full jitter (uniform in [0, ceiling]), so receivers coming back after an outage are
    not hit by every sender's retries at once."""
    return rng.uniform(0, retry_ceiling(attempt, base, cap))


def retry_ceiling(attempt: int, base: float = 30.0, cap: float = 43_200.0) -> float:
    return float(min(cap, base * RETRY_FACTOR ** max(attempt - 1, 0)))


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Retry-After as seconds from now: delta-seconds or an HTTP date (RFC 9110 §10.2.3);
    None when absent or unreadable, 0 for a date in the past."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, (moment - now).total_seconds())


def classify(status: int) -> Verdict:
    """What a receiver's status means for the alert. 3xx is permanent: redirects are never
    followed (a redirect could point anywhere, inside our network too)."""
    if 200 <= status < 300:
        return "delivered"
    if status == 410:
        return "gone"
    if status in (408, 429) or status >= 500:
        return "retry"
    return "failed"


# --- URL safety ---------------------------------------------------------------------------


class UnsafeUrl(ValueError):
    """The URL may not be used as a webhook endpoint (scheme, host or where it resolves)."""


class Unresolvable(UnsafeUrl):
    """The host does not resolve now (may be temporary at send time)."""


@dataclass(frozen=True)
class Allow:
    """SLATIMER_WEBHOOK_ALLOW: hosts and CIDRs that may be used over http or in non-public
    ranges (a local receiver in tests, a partner in a private network)."""

    hosts: frozenset[str] = frozenset()
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()

    @classmethod
    def parse(cls, text: str) -> Allow:
        hosts, networks = set(), []
        for item in filter(None, (part.strip() for part in text.split(","))):
            try:
                networks.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                hosts.add(item.lower().rstrip("."))
        return cls(frozenset(hosts), tuple(networks))

    def permits(self, host: str, addresses: Sequence[IpAddress]) -> bool:
        if host.lower().rstrip(".") in self.hosts:
            return True
        inside = [any(address in network for network in self.networks) for address in addresses]
        return bool(inside) and all(inside)


@dataclass(frozen=True)
class Target:
    """Where to connect: the checked address is used for the connection itself, so a DNS
    answer that changes between the check and the request (rebinding) cannot redirect it."""

    url: str
    host: str
    address: IpAddress


def is_public(address: IpAddress) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return address.is_global and not address.is_multicast


def system_resolve(host: str, port: int) -> list[IpAddress]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as error:
        raise Unresolvable(f"{host} does not resolve: {error}") from None
    found = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]
    return list(dict.fromkeys(found))


def check_url(url: str, allow: Allow, resolve: Resolve = system_resolve) -> Target:
    """Refuse anything but https to a public address, unless the allow-list permits it."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as error:
        raise UnsafeUrl(f"not a valid URL: {error}") from None
    if parsed.scheme not in ("https", "http") or not parsed.host:
        raise UnsafeUrl("a webhook URL must be https://host/…")
    if parsed.userinfo:
        raise UnsafeUrl("credentials in the URL are not allowed; use the signing secret")
    addresses = resolve(parsed.host, parsed.port or (443 if parsed.scheme == "https" else 80))
    allowed = allow.permits(parsed.host, addresses)
    if parsed.scheme != "https" and not allowed:
        raise UnsafeUrl("only https URLs are allowed (SLATIMER_WEBHOOK_ALLOW lists exceptions)")
    blocked = [str(a) for a in addresses if not is_public(a)]
    if not addresses or (blocked and not allowed):
        raise UnsafeUrl(f"{parsed.host} resolves to a non-public address: {', '.join(blocked)}")
    return Target(url, parsed.host, addresses[0])


# --- signing and the request ------------------------------------------------------------


def new_secret() -> str:
    """A Standard Webhooks secret: `whsec_` and 32 random bytes in base64."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def valid_secret(secret: str) -> bool:
    try:
        raw = base64.b64decode(secret.removeprefix("whsec_"), validate=True)
    except ValueError:
        return False
    return secret.startswith("whsec_") and 24 <= len(raw) <= 64


def signing_secrets(merchant: Merchant, now: datetime, grace: timedelta) -> list[str]:
    """The current secret, and the previous one during the grace period after a rotation."""
    found = [merchant.secret] if merchant.secret else []
    rotated = merchant.secret_rotated_at
    if merchant.previous_secret and rotated and now - rotated < grace:
        found.append(merchant.previous_secret)
    return found


def encode_body(body: dict[str, Any]) -> bytes:
    """The bytes sent, identical on every attempt: sorted keys, whatever order the store
    (PostgreSQL JSONB reorders keys) hands them back in."""
    return orjson.dumps(body, option=orjson.OPT_SORT_KEYS)


def signed_headers(
    alert_id: str, body: bytes, keys: Sequence[str], now: datetime
) -> dict[str, str]:
    """Standard Webhooks headers; several signatures (space-separated) during a rotation."""
    moment = datetime.fromtimestamp(floor(now.timestamp()), UTC)
    text = body.decode()
    signatures = [Webhook(key).sign(alert_id, moment, text) for key in keys]
    return {
        "content-type": "application/json",
        "user-agent": "slatimer-webhooks/1",
        "webhook-id": alert_id,
        "webhook-timestamp": str(floor(now.timestamp())),
        "webhook-signature": " ".join(signatures),
    }


@dataclass(frozen=True)
class Response:
    """What came back: a status (None: no response at all), Retry-After, an error excerpt;
    `refused` when we would not send at all (the URL is unsafe now)."""

    status: int | None
    retry_after: str | None = None
    error: str | None = None
    refused: bool = False


def post(client: httpx.Client, target: Target, body: bytes, headers: dict[str, str]) -> Response:
    """POST to the checked address (Host and TLS SNI keep the name), never following redirects;
    only the first 256 characters of the answer are kept."""
    original = httpx.URL(target.url)
    pinned = original.copy_with(host=str(target.address))
    extensions = {} if _is_ip(target.host) else {"sni_hostname": target.host}
    headers = {**headers, "host": original.netloc.decode()}
    try:
        with client.stream(
            "POST", pinned, content=body, headers=headers, extensions=extensions
        ) as answer:
            excerpt = _excerpt(answer)
    except httpx.HTTPError as error:
        return Response(None, error=excerpt_of(f"{type(error).__name__}: {error}"))
    return Response(answer.status_code, answer.headers.get("retry-after"), excerpt)


def _excerpt(answer: httpx.Response) -> str | None:
    if 200 <= answer.status_code < 300:
        return None
    chunk = next(answer.iter_bytes(), b"")
    return excerpt_of(f"HTTP {answer.status_code}: {chunk[:256].decode(errors='replace')}")


def excerpt_of(text: str) -> str:
    return text if len(text) <= 256 else text[:255] + "…"


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def make_client(connect_timeout: float, read_timeout: float) -> httpx.Client:
    timeout = httpx.Timeout(read_timeout, connect=connect_timeout)
    return httpx.Client(timeout=timeout, follow_redirects=False, trust_env=False)
