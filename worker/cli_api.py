"""CLI commands for the read API and metrics (registered by worker.cli)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this module's commands to the `slatimer` app."""
