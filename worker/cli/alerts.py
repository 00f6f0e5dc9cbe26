"""CLI commands for merchants' webhook endpoints and the alert outbox (under worker.cli.main).

A secret is printed once, on stdout, when it is made; it is never logged and never listed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Annotated

import orjson
import typer

from models.outcomes import iso
from store.sql.outbox import Alert, SqlOutbox, outbox
from worker.alerts.webhooks import Allow, UnsafeUrl, check_url, new_secret, valid_secret
from worker.cli.errors import checked_runtime

merchants_app = typer.Typer(no_args_is_help=True, help="Merchants' webhook endpoints.")
alerts_app = typer.Typer(no_args_is_help=True, help="The alert outbox: what was sent, what failed.")


def register(app: typer.Typer) -> None:
    """Add this module's commands to the `slatimer` app."""
    app.add_typer(merchants_app, name="merchants")
    app.add_typer(alerts_app, name="alerts")


@contextmanager
def _outbox() -> Iterator[tuple[SqlOutbox, Callable[[], datetime]]]:
    runtime = checked_runtime()
    try:
        with outbox(runtime.engine) as box:
            yield box, runtime.clock.now
    finally:
        runtime.engine.dispose()


def _settings_allow() -> Allow:
    from config.settings import Settings

    return Allow.parse(Settings().webhook_allow)


@merchants_app.command("add")
def merchants_add(
    merchant_id: Annotated[str, typer.Argument(help="The merchant id orders carry.")],
    url: Annotated[str, typer.Option(help="The https endpoint alerts are POSTed to.")],
    secret: Annotated[
        str | None, typer.Option(help="A whsec_… secret; one is generated if not given.")
    ] = None,
) -> None:
    """Register (or change) a merchant's endpoint; a new secret is printed once."""
    try:
        check_url(url, _settings_allow())
    except UnsafeUrl as unsafe:
        raise typer.BadParameter(str(unsafe), param_hint="--url") from None
    if secret is not None and not valid_secret(secret):
        raise typer.BadParameter("expected whsec_ and 24-64 bytes in base64", param_hint="--secret")
    with _outbox() as (box, now):
        known = box.merchant(merchant_id)
        if secret is None and (known is None or not known.secret):
            secret = new_secret()
        had_none = box.save_endpoint(merchant_id, url, secret)
        released = box.release(merchant_id, now()) if had_none else 0
    typer.echo(f"merchant {merchant_id}: endpoint {url}; {released} waiting alerts released")
    if secret is not None:
        typer.echo(f"secret (shown once, keep it safe): {secret}")


@merchants_app.command("list")
def merchants_list(
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """Merchants with their endpoint, whether enabled and why not; never a secret."""
    with _outbox() as (box, _now):
        merchants = box.all_merchants()
    for merchant in merchants:
        row: dict[str, object] = {
            "merchant_id": merchant.merchant_id,
            "url": merchant.webhook_url,
            "enabled": merchant.enabled,
            "disabled_reason": merchant.disabled_reason,
            "secret_rotated_at": _iso(merchant.secret_rotated_at),
        }
        typer.echo(orjson.dumps(row).decode() if as_json else _merchant_line(row))


def _merchant_line(row: dict[str, object]) -> str:
    state = "enabled" if row["enabled"] else f"DISABLED ({row['disabled_reason']})"
    return f"{row['merchant_id']:<20} {state:<10} {row['url'] or '(no endpoint)'}"


@merchants_app.command("rotate-secret")
def merchants_rotate_secret(merchant_id: str) -> None:
    """A new secret, printed once; the previous one still signs during the grace period."""
    secret = new_secret()
    with _outbox() as (box, now):
        found = box.rotate_secret(merchant_id, secret, now())
    if not found:
        raise typer.BadParameter(f"no merchant {merchant_id}", param_hint="MERCHANT_ID")
    typer.echo(f"new secret (shown once, keep it safe): {secret}")


@merchants_app.command("enable")
def merchants_enable(merchant_id: str) -> None:
    """Re-enable an endpoint disabled after a 410; its parked alerts are sent again."""
    with _outbox() as (box, now):
        count = box.enable(merchant_id, now())
    if count is None:
        raise typer.BadParameter(f"no merchant {merchant_id}", param_hint="MERCHANT_ID")
    typer.echo(f"merchant {merchant_id} enabled; {count} parked alerts back to pending")


@alerts_app.command("list")
def alerts_list(
    failed: Annotated[bool, typer.Option("--failed", help="Only failed (parked) ones.")] = False,
    merchant: Annotated[str | None, typer.Option(help="Only this merchant's.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many, newest first.")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """Alerts: state, attempts, the last status and error excerpt."""
    with _outbox() as (box, _now):
        alerts = box.listing(failed, merchant, limit)
    for alert in alerts:
        row = _alert_row(alert)
        typer.echo(orjson.dumps(row).decode() if as_json else _alert_line(row))


def _alert_row(alert: Alert) -> dict[str, object]:
    return {
        "alert_id": alert.alert_id,
        "merchant_id": alert.merchant_id,
        "order_id": alert.order_id,
        "kind": alert.kind,
        "state": alert.state,
        "attempts": alert.attempts,
        "next_attempt_at": _iso(alert.next_attempt_at),
        "last_status": alert.last_status,
        "last_error": alert.last_error,
        "delivered_at": _iso(alert.delivered_at),
    }


def _alert_line(row: dict[str, object]) -> str:
    status = row["last_status"] or "-"
    return (
        f"{row['alert_id']}  {row['state']:<9} {row['kind']:<10} {row['merchant_id']:<14} "
        f"{row['order_id']:<12} attempts={row['attempts']} status={status} "
        f"{row['last_error'] or ''}"
    ).rstrip()


@alerts_app.command("retry")
def alerts_retry(
    ids: Annotated[
        list[str] | None, typer.Option("--id", help="A failed or disabled alert (repeatable).")
    ] = None,
    all_failed: Annotated[bool, typer.Option("--all-failed", help="Every failed alert.")] = False,
) -> None:
    """Send parked alerts again: back to pending, attempts reset."""
    if bool(ids) == all_failed:
        raise typer.BadParameter("give either --id ALERT_ID (repeatable) or --all-failed")
    with _outbox() as (box, now):
        count = box.retry(None if all_failed else ids, now())
    typer.echo(f"{count} alerts back to pending")


def _iso(moment: datetime | None) -> str | None:
    return iso(moment) if moment else None
