"""CLI commands for merchants' webhook endpoints and the alert outbox (registered by worker.cli)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this module's commands to the `slatimer` app."""
