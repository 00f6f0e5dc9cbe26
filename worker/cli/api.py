"""CLI commands for the read API and monitoring (registered by worker.cli.main)."""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from config.settings import Settings
from worker.cli.errors import require_database

api_keys_app = typer.Typer(no_args_is_help=True, help="Merchants' keys for the read API.")


def register(app: typer.Typer) -> None:
    """Add this module's commands to the `slatimer` app."""
    app.command("api")(api)
    app.command("flower")(flower)
    app.add_typer(api_keys_app, name="api-keys")


def api(
    host: Annotated[str | None, typer.Option(help="Bind address [SLATIMER_API_HOST].")] = None,
    port: Annotated[int | None, typer.Option(help="Port [SLATIMER_API_PORT].")] = None,
) -> None:
    """Serve the read API (OpenAPI at /openapi.json), the store's /metrics and the console
    (/console; docs/console.md)."""
    import uvicorn

    from store.sql.engine import make_engine
    from worker.console.server import build_app

    settings = Settings()
    require_database(settings.database_url)
    engine = make_engine(settings.database_url)
    application = build_app(engine, settings)
    try:
        uvicorn.run(
            application,
            host=host or settings.api_host,
            port=port or settings.api_port,
            log_level=settings.log_level.lower(),
            access_log=False,
        )
    finally:
        engine.dispose()


@api_keys_app.command("issue")
def issue(merchant_id: Annotated[str, typer.Argument(help="The merchant's id.")]) -> None:
    """Issue a new key for MERCHANT_ID (creating the merchant if absent; an old key stops
    working). The key is printed once: only its hash is stored."""
    from store.sql.engine import make_engine, session_factory
    from worker.api.keys import issue_key

    url = Settings().database_url
    require_database(url)
    engine = make_engine(url)
    try:
        with session_factory(engine)() as session:
            key = issue_key(session, merchant_id)
            session.commit()
    finally:
        engine.dispose()
    typer.echo(key)
    typer.echo(f"issued a new API key for {merchant_id}; it is shown only this once", err=True)


def flower(
    port: Annotated[int | None, typer.Option(help="Port [SLATIMER_FLOWER_PORT].")] = None,
    address: Annotated[str, typer.Option(help="Bind address.")] = "0.0.0.0",
) -> None:
    """Run Flower (Celery's monitor) for the timer workers; basic auth from
    SLATIMER_FLOWER_BASIC_AUTH. Replaces this process, so signals reach Flower directly."""
    settings = Settings()
    env = dict(os.environ)
    if settings.flower_basic_auth is not None:
        env["FLOWER_BASIC_AUTH"] = settings.flower_basic_auth.get_secret_value()
    argv = flower_argv(port or settings.flower_port, address)
    sys.stdout.flush()
    os.execvpe(sys.executable, argv, env)


def flower_argv(port: int, address: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "celery",
        "--app=tasks.app",
        "flower",
        f"--port={port}",
        f"--address={address}",
    ]
