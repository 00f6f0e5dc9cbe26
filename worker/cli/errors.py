"""What a user sees when a command cannot run: one line on stderr with a hint, exit status 2.

Every command runs under `FriendlyGroup` (the root app's click group), so the translation from
an exception to that line happens here once: a database without a schema (SQLite's "no such
table", PostgreSQL's undefined_table), a server that refuses connections (database or broker),
an input file that cannot be read. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import kombu.exceptions
import typer
from kombu.utils.url import maybe_sanitize_url
from sqlalchemy import exc as sql_errors
from sqlalchemy.engine import make_url
from typer.core import TyperGroup

from config.settings import Settings

if TYPE_CHECKING:
    from worker.service.bootstrap import App

UNDEFINED_TABLE = "42P01"
"""PostgreSQL's SQLSTATE for a relation that does not exist (psycopg's UndefinedTable)."""
USAGE_ERROR = 2


class NoSchema(Exception):
    """The database has no slatimer tables (or, for SQLite, no file) yet."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.url = url


class FriendlyGroup(TyperGroup):
    """The root group: runs the chosen command and turns the errors a user can fix into one
    line on stderr. Its help names each value by its parameter (`--until UNTIL`, `EVENTS`)
    rather than typer's type tags (`<str>`, `<path>`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _name_values(self)

    def invoke(self, ctx: Any) -> Any:  # typer's vendored click.Context
        try:
            return super().invoke(ctx)
        except Exception as error:
            message = explain(error)
            if message is None:
                raise
            typer.echo(f"slatimer: {message}", err=True)
            raise typer.Exit(USAGE_ERROR) from None


def _name_values(command: Any) -> None:  # a command of typer's vendored click
    for param in command.params:
        if param.metavar is None and param.name and not getattr(param, "is_flag", False):
            param.metavar = param.name.upper()
    for child in getattr(command, "commands", {}).values():
        _name_values(child)


def explain(error: BaseException) -> str | None:
    """The line for an error a user can fix (with the hint what to do), None for any other."""
    if isinstance(error, NoSchema) or _is_missing_table(error):
        url = error.url if isinstance(error, NoSchema) else Settings().database_url
        return f"the database at {shown(url)} has no schema yet; run: slatimer db upgrade"
    if isinstance(error, sql_errors.OperationalError | sql_errors.InterfaceError):
        return (
            f"cannot reach the database at {shown(Settings().database_url)}: "
            f"{_first_line(error.orig)}; is it running? (SLATIMER_DATABASE_URL)"
        )
    if isinstance(error, kombu.exceptions.OperationalError | ConnectionError):
        return (
            f"cannot reach the broker at {maybe_sanitize_url(Settings().broker_url)}: "
            f"{_first_line(error)}; "
            "is it running? (SLATIMER_BROKER_URL)"
        )
    if isinstance(error, OSError) and error.filename is not None:
        return f"cannot read {error.filename}: {error.strerror}; check the path and permissions"
    return None


def _is_missing_table(error: BaseException) -> bool:
    if not isinstance(error, sql_errors.DBAPIError):
        return False
    orig = error.orig
    return getattr(orig, "sqlstate", None) == UNDEFINED_TABLE or "no such table" in str(orig)


def require_database(url: str) -> None:
    """Refuse a SQLite URL whose file does not exist before anything connects: connecting
    would leave an empty database file behind."""
    parsed = make_url(url)
    path = parsed.database
    if parsed.get_backend_name() == "sqlite" and path and path != ":memory:":
        if not path.startswith("file:") and not Path(path).exists():
            raise NoSchema(url)


def shown(url: str) -> str:
    """A database URL fit to print: any password masked."""
    return make_url(url).render_as_string(hide_password=True)


def _first_line(error: BaseException | None) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]


def checked_runtime() -> App:
    """`bootstrap()` for a command that needs the schema: refused before connecting if the
    SQLite file is not there."""
    from worker.service.bootstrap import bootstrap

    settings = Settings()
    require_database(settings.database_url)
    return bootstrap(settings)
