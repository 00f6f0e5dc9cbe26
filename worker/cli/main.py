"""slatimer enforces JD.HK's Shopify shipping rules: it times every order's deadlines and
records violations, points and signed alerts per merchant.

Try first: slatimer demo (about two minutes, no servers needed)."""

from __future__ import annotations

import sys
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Annotated

import orjson
import typer

from config.policy import PolicyError, load_policies, load_policy
from config.settings import DEFAULT_POLICY, Settings
from models.events import contract_schema
from models.outcomes import Outcome, iso
from models.policy import Policy
from store.base import DeadlineView
from worker.cli.errors import FriendlyGroup, checked_runtime, require_database
from worker.process.logs import configure_logging
from worker.service.replay import (
    SMALL_LOG,
    ReplayResult,
    compare_results,
    replay_jobs,
    replay_lines,
)

app = typer.Typer(
    cls=FriendlyGroup,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    help=__doc__,
)
db_app = typer.Typer(no_args_is_help=True, help="Database schema (Alembic).")
app.add_typer(db_app, name="db")


@app.callback()
def _setup() -> None:
    """Logs go to stderr as JSON; replay and demo keep stdout for their own output."""
    settings = Settings()
    configure_logging(settings.log_level, settings.log_json)


EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "day-of-orders.jsonl"


def _aware(value: str) -> datetime:
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise typer.BadParameter("needs a UTC offset, e.g. 2026-11-20T00:00:00Z")
    return moment


@app.command()
def replay(
    events: Annotated[Path, typer.Argument(help="A JSON-lines event log; '-' reads stdin.")],
    until: Annotated[
        str | None, typer.Option(help="Advance the clock to this time after the last event.")
    ] = None,
    policy: Annotated[
        list[Path] | None,
        typer.Option(help="Policy file (TOML); repeat it to give the versions in force over time."),
    ] = None,
    compare: Annotated[
        list[Path] | None,
        typer.Option(help="Another policy (or versions): print what changes against it."),
    ] = None,
    summary: Annotated[bool, typer.Option(help="Add points per merchant at the end.")] = False,
    jobs: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Processes to replay in, the log split by merchant (default: one per core); "
            "the output is the same as with 1. Logs under "
            f"{SMALL_LOG:,} lines replay in one process whatever this says: forking and "
            "merging would cost more than the other cores save.",
        ),
    ] = None,
) -> None:
    """Run an event log through the rules on a virtual clock and print the outcomes (JSON lines)."""
    configure_logging("WARNING")  # one log line per outcome would double the output
    rules = _policies(policy or [DEFAULT_POLICY], "--policy")
    stream = sys.stdin.buffer if str(events) == "-" else events.open("rb")
    with stream:
        lines = stream.read().splitlines()
    moment = _aware(until) if until else None
    result = replay_jobs(lines, rules, until=moment, jobs=jobs)
    if compare:
        baseline = replay_jobs(lines, _policies(compare, "--compare"), until=moment, jobs=jobs)
        _print_comparison(baseline, result)
    else:
        _print_outcomes(result.in_order())
    if summary:
        _print_summary(result)
    for error in result.errors:
        typer.echo(error, err=True)
    raise typer.Exit(1 if result.errors else 0)


def _policies(paths: list[Path], option: str) -> Policy:
    try:
        return load_policies(paths)
    except PolicyError as bad_policy:
        raise typer.BadParameter(str(bad_policy), param_hint=option) from None


def _print_comparison(old: ReplayResult, new: ReplayResult) -> None:
    """A what-if before a rule change ships: outcomes added and removed, points per merchant."""
    for change in compare_results(old, new):
        typer.echo(orjson.dumps(change).decode())


def _print_outcomes(outcomes: list[Outcome]) -> None:
    out = sys.stdout.buffer
    for outcome in outcomes:
        out.write(orjson.dumps(outcome.as_json()) + b"\n")
    out.flush()


def _print_summary(result: ReplayResult) -> None:
    line = {"summary": {"events": result.events, "points_by_merchant": result.points_by_merchant()}}
    typer.echo(orjson.dumps(line).decode())


@app.command()
def merchant(
    merchant_id: str,
    at: Annotated[str | None, typer.Option(help="Standing as of this time (default: now).")] = None,
) -> None:
    """A merchant's standing: points over the rolling window, measures, ledger timeline (JSON)."""
    from worker.service.standing import merchant_standing

    services = checked_runtime()
    moment = _aware(at) if at else services.clock.now()
    report = merchant_standing(services.engine, services.policy, merchant_id, moment)
    typer.echo(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())


@app.command()
def deadlines(
    stream_id: Annotated[
        str, typer.Argument(help="An order id, or 'ipr:<complaint id>' / 'cs:<inquiry id>'.")
    ],
) -> None:
    """A stream's clocks as stored: due time, state, the calendar in force, paused time (JSON)."""
    services = checked_runtime()
    with services.uow() as uow:
        views = uow.deadlines.timeline(stream_id)
    typer.echo(
        orjson.dumps([_timeline_entry(v) for v in views], option=orjson.OPT_INDENT_2).decode()
    )


def _timeline_entry(view: DeadlineView) -> dict[str, object]:
    return {
        "rule": view.rule,
        "subject": view.subject or None,
        "due_at": iso(view.due_at),
        "state": view.state,
        "calendar": view.calendar,
        "paused": [
            {"from": iso(start), "until": iso(end), "hours": (end - start).total_seconds() / 3600}
            for start, end in view.paused
        ],
    }


@app.command()
def schema() -> None:
    """Print the JSON Schema of the event contract."""
    typer.echo(orjson.dumps(contract_schema(), option=orjson.OPT_INDENT_2).decode())


@db_app.command("upgrade")
def db_upgrade(revision: str = "head") -> None:
    """Create or migrate the schema at SLATIMER_DATABASE_URL."""
    from store.sql.engine import make_engine
    from store.sql.migrate import upgrade

    settings = Settings()
    engine = make_engine(settings.database_url)
    upgrade(engine, revision)
    engine.dispose()
    typer.echo(f"schema at {revision} on {engine.url.render_as_string(hide_password=True)}")


@app.command()
def worker(
    concurrency: Annotated[int | None, typer.Option(help="Worker processes.")] = None,
    hostname: Annotated[
        str | None,
        typer.Option(
            "--hostname", "-n", help="Celery node name, e.g. slatimer2@%h (one per process)."
        ),
    ] = None,
) -> None:
    """Run the Celery worker: fires deadlines and delivers alerts (SLATIMER_TIMER_QUEUE and
    SLATIMER_ALERT_QUEUE)."""
    from worker.process.metrics import serve_worker_metrics

    require_database(Settings().database_url)
    serve_worker_metrics(Settings())  # before tasks.app: the pool's children inherit the mode
    from tasks.app import app as celery

    settings = Settings()
    celery.worker_main(
        [
            "worker",
            f"--queues={settings.timer_queue},{settings.alert_queue}",
            f"--concurrency={concurrency or settings.worker_concurrency}",
            f"--hostname={hostname or settings.worker_name}",
            f"--loglevel={settings.log_level}",
            "--task-events",
            "--without-gossip",
            "--without-mingle",
        ]
    )


@app.command()
def dispatcher() -> None:
    """Run the dispatcher: hands deadlines due within the horizon to Celery as ETA tasks."""
    from tasks.alerts import publish_delivery
    from tasks.timers import publish_deadlines
    from worker.alerts.delivery import relay_step
    from worker.process.metrics import serve_process_metrics
    from worker.timers.dispatcher import run_dispatcher

    runtime = checked_runtime()
    serve_process_metrics(runtime.settings)
    relay = partial(relay_step, runtime.engine, runtime.clock, runtime.settings, publish_delivery)
    run_dispatcher(runtime, publish_deadlines, each_pass=[relay])


@app.command()
def run() -> None:
    """Migrate the schema, then run ingest, worker and dispatcher together (restarting any
    that dies) until Ctrl-C. With no configuration: SQLite store, embedded broker."""
    from worker.process.supervisor import Supervisor

    db_upgrade("head")
    supervisor = Supervisor()
    supervisor.stop_on_signals()
    supervisor.run()


@app.command()
def demo(
    events: Annotated[Path, typer.Option(help="Event log to stream.")] = EXAMPLE,
    replay_only: Annotated[
        bool, typer.Option("--replay-only", help="Just replay the log (seconds, no processes).")
    ] = False,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            help="Keep the demo's database and logs in this folder (default: a new "
            "temporary one); it must not hold an earlier demo's."
        ),
    ] = None,
) -> None:
    """Run the real runtime on embedded defaults and stream a sales day through it (~2 min)."""
    configure_logging("WARNING")
    if replay_only:
        _replay_table(events)
        return
    from worker.cli.demo import database_url, run_demo

    if data_dir is not None and (data_dir / "slatimer.db").exists():
        raise typer.BadParameter(
            f"{data_dir} already holds a demo's data ({database_url(data_dir)})",
            param_hint="--data-dir",
        )
    if not run_demo(events, out=typer.echo, data_dir=data_dir):
        raise typer.Exit(1)


def _replay_table(events: Path) -> None:
    """The demo's stream (the same cut of the log) replayed on the real scale, where the demo
    policy is the default one with 3.3's trace checks left out."""
    from worker.cli.demo import demo_stream, stream_end

    lines = demo_stream(events.read_bytes().splitlines())
    rules = load_policy(DEFAULT_POLICY).model_copy(update={"trace_checks": False})
    result = replay_lines(lines, rules, until=stream_end(lines))
    for outcome in result.in_order():
        row = outcome.as_json()
        points = "" if row["points"] is None else f"{row['points']:+d} pts"
        typer.echo(
            f"{row['at']}  {row['kind']:<10} {row['rule']:<31} {row['order_id']:<10} "
            f"{row['merchant_id'] or '':<12} clause {row['clause']:<16} {points}"
        )
    typer.echo("\npoints per merchant:")
    for merchant, total in result.points_by_merchant().items():
        typer.echo(f"  {merchant:<14} {total:>4}")
    for error in result.errors:
        typer.echo(error, err=True)


# --- ingest: the order-queue consumer, the producer tool and the dead-letter queue -------------

dlq_app = typer.Typer(no_args_is_help=True, help="The dead-letter queue: messages ingest refused.")
app.add_typer(dlq_app, name="dlq")


@app.command()
def ingest(
    once: Annotated[
        bool,
        typer.Option(
            "--once",
            help="Drain the queue, print the counts as JSON and exit (status 1 if the database "
            "or the broker is unreachable; the messages stay on the queue).",
        ),
    ] = False,
) -> None:
    """Consume the order queue: one transaction per batch; bad messages go to the DLQ."""
    from worker.ingest.consumer import Ingestor
    from worker.process.metrics import serve_process_metrics

    runtime = checked_runtime()
    serve_process_metrics(runtime.settings)
    ingestor = Ingestor(runtime)
    ingestor.stop_on_signals()
    try:
        status = ingestor.run(once=once)
    finally:
        runtime.engine.dispose()
    if once:
        typer.echo(orjson.dumps(ingestor.stats.as_dict()).decode())
    raise typer.Exit(status)


@app.command()
def publish(
    events: Annotated[Path, typer.Argument(help="JSON lines, one event per line; '-' is stdin.")],
    content_type: Annotated[
        str, typer.Option(help="The content type to declare (others are dead-lettered).")
    ] = "application/json",
) -> None:
    """Publish each line of a JSON-lines file, as is, to the order queue (blank lines skipped)."""
    from worker.ingest.consumer import publish_events

    if str(events) != "-" and not events.is_file():
        raise typer.BadParameter(f"no such file: {events}", param_hint="EVENTS")
    settings = Settings()
    stream = sys.stdin.buffer if str(events) == "-" else events.open("rb")
    with stream:
        bodies = (line.rstrip(b"\r\n") for line in stream if line.strip())
        count = publish_events(settings.broker_url, bodies, settings, content_type)
    typer.echo(f"published {count} messages to queue {settings.order_queue}", err=True)


@dlq_app.command("list")
def dlq_list(
    limit: Annotated[int, typer.Option(min=1, help="Show at most this many, newest first.")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """Show dead letters: id, received_at, field, reason, a body excerpt."""
    from worker.ingest.batch import dead_letter_json, dead_letter_text

    runtime = checked_runtime()
    with runtime.uow() as uow:
        letters = uow.dead_letters.latest(limit)
    runtime.engine.dispose()
    for letter in letters:
        typer.echo(dead_letter_json(letter) if as_json else dead_letter_text(letter))


@dlq_app.command("replay")
def dlq_replay(
    ids: Annotated[
        list[int] | None, typer.Option("--id", help="A dead letter to re-drive (repeatable).")
    ] = None,
    every: Annotated[bool, typer.Option("--all", help="Every one not replayed yet.")] = False,
    limit: Annotated[int, typer.Option(min=1, help="With --all: at most this many.")] = 10_000,
) -> None:
    """Re-publish dead letters' original bodies to the order queue and mark them replayed."""
    if bool(ids) == every:
        raise typer.BadParameter("give either --id N (repeatable) or --all")
    from worker.ingest.batch import replay_dead_letters
    from worker.ingest.consumer import connect, republish

    runtime = checked_runtime()
    with connect(runtime.settings) as connection, runtime.uow() as uow:
        try:
            letters = replay_dead_letters(
                uow,
                ids or None,
                lambda batch: republish(connection, batch, runtime.settings),
                runtime.clock.now(),
                max(limit, len(ids or ())),
            )
        except LookupError as missing:
            raise typer.BadParameter(str(missing), param_hint="--id") from None
        uow.commit()
    runtime.engine.dispose()
    replayed = ", ".join(str(letter.id) for letter in letters) or "none"
    typer.echo(f"replayed to queue {runtime.settings.order_queue}: {replayed}")


def _register_command_groups() -> None:
    """Command groups that live in their own modules, added last so each stays small."""
    from worker.cli import alerts as cli_alerts
    from worker.cli import api as cli_api

    cli_alerts.register(app)
    cli_api.register(app)


_register_command_groups()
