"""What a user sees when a command cannot run: one line on stderr with a hint, exit 2."""

from __future__ import annotations

import re
from pathlib import Path

import kombu.exceptions
import psycopg.errors
import pytest
import typer
from sqlalchemy import exc as sql_errors
from typer.testing import CliRunner, Result

from worker.cli.main import app

runner = CliRunner()
NO_SCHEMA = "has no schema yet; run: slatimer db upgrade"
READING_COMMANDS = [
    ["merchant", "coastal"],
    ["deadlines", "o-1"],
    ["dlq", "list"],
    ["merchants", "list"],
    ["alerts", "list"],
    ["api-keys", "issue", "m-1"],
]


def _one_line(result: Result) -> str:
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("slatimer: ")
    return lines[0]


@pytest.mark.parametrize("command", READING_COMMANDS, ids=" ".join)
def test_a_missing_sqlite_file_is_no_schema_and_is_not_created(
    command: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    database = tmp_path / "slatimer.db"
    monkeypatch.setenv("SLATIMER_DATABASE_URL", f"sqlite:///{database}")
    line = _one_line(runner.invoke(app, command))
    assert line == f"slatimer: the database at sqlite:///{database} {NO_SCHEMA}"
    assert not database.exists()


@pytest.mark.parametrize("command", READING_COMMANDS[:3], ids=" ".join)
def test_a_sqlite_file_without_tables_is_no_schema(
    command: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    database = tmp_path / "slatimer.db"
    database.touch()  # SQLite's own "no such table" from the query
    monkeypatch.setenv("SLATIMER_DATABASE_URL", f"sqlite:///{database}")
    assert _one_line(runner.invoke(app, command)).endswith(NO_SCHEMA)


@pytest.mark.parametrize("wrapper", [sql_errors.ProgrammingError, sql_errors.OperationalError])
def test_postgresql_undefined_table_is_no_schema_with_the_password_hidden(
    wrapper: type[sql_errors.DBAPIError], monkeypatch: pytest.MonkeyPatch
) -> None:
    import worker.service.standing

    missing = psycopg.errors.UndefinedTable('relation "points_ledger" does not exist')

    def undefined(*_args: object) -> None:
        raise wrapper("SELECT … FROM points_ledger", {}, missing)

    monkeypatch.setattr(worker.service.standing, "merchant_standing", undefined)
    monkeypatch.setenv("SLATIMER_DATABASE_URL", "postgresql+psycopg://app:s3cret@db.internal/prod")
    line = _one_line(runner.invoke(app, ["merchant", "coastal", "--at", "2026-03-01T00:00:00Z"]))
    assert (
        line
        == f"slatimer: the database at postgresql+psycopg://app:***@db.internal/prod {NO_SCHEMA}"
    )


def test_a_database_that_refuses_connections_is_named_with_a_hint(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SLATIMER_DATABASE_URL", "postgresql+psycopg://app:s3cret@127.0.0.1:1/x")
    line = _one_line(runner.invoke(app, ["dlq", "list"]))
    assert line.startswith("slatimer: cannot reach the database at postgresql+psycopg://app:***@")
    assert "Connection refused" in line and line.endswith("(SLATIMER_DATABASE_URL)")
    assert "s3cret" not in line


@pytest.mark.parametrize(
    "refusal",
    [kombu.exceptions.OperationalError("[Errno 111] Connection refused"), ConnectionRefusedError()],
    ids=["kombu", "socket"],
)
def test_a_broker_that_refuses_connections_is_named_with_a_hint(
    refusal: Exception, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import worker.ingest.consumer

    def refused(*_args: object) -> int:
        raise refusal

    monkeypatch.setattr(worker.ingest.consumer, "publish_events", refused)
    monkeypatch.setenv("SLATIMER_BROKER_URL", "amqp://guest:s3cret@127.0.0.1:1//")
    events = tmp_path / "events.jsonl"
    events.write_text("{}\n")
    line = _one_line(runner.invoke(app, ["publish", str(events)]))
    assert line.startswith("slatimer: cannot reach the broker at amqp://guest:**@127.0.0.1:1//: ")
    assert line.endswith("is it running? (SLATIMER_BROKER_URL)")


def test_a_missing_input_file_is_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "no-such.jsonl"
    line = _one_line(runner.invoke(app, ["replay", str(missing)]))
    reason = "No such file or directory; check the path and permissions"
    assert line == f"slatimer: cannot read {missing}: {reason}"


def test_an_unreadable_input_is_one_line(tmp_path: Path) -> None:
    line = _one_line(runner.invoke(app, ["demo", "--replay-only", "--events", str(tmp_path)]))
    assert line.startswith(f"slatimer: cannot read {tmp_path}: Is a directory")


def test_any_other_error_keeps_its_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    import worker.cli.main

    def broken() -> dict[str, object]:
        raise ValueError("a bug")

    monkeypatch.setattr(worker.cli.main, "contract_schema", broken)
    result = runner.invoke(app, ["schema"])
    assert isinstance(result.exception, ValueError)


TYPE_TAG = re.compile(r"--[\w-]+ <\w+")


def _commands(group: object, path: list[str]) -> list[list[str]]:
    found = []
    for name, command in getattr(group, "commands", {}).items():
        found.append([*path, name])
        found.extend(_commands(command, [*path, name]))
    return found


def test_help_opens_with_what_slatimer_is_and_the_command_to_try_first() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    usage, blank, *text = result.stdout.splitlines()
    assert usage.startswith("Usage: ") and blank == ""
    assert text[0].strip().startswith("slatimer enforces JD.HK's Shopify shipping rules")
    assert "Try first: slatimer demo" in result.stdout
    assert "<bool>" not in result.stdout


def test_no_option_in_any_help_carries_a_type_tag() -> None:
    commands = _commands(typer.main.get_command(app), [])
    assert ["dlq", "list"] in commands and ["replay"] in commands
    for command in commands:
        result = runner.invoke(app, [*command, "--help"])
        assert result.exit_code == 0, command
        assert "<bool>" not in result.stdout, command
        assert not TYPE_TAG.search(result.stdout), (command, TYPE_TAG.findall(result.stdout))
