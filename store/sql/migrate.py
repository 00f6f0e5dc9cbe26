"""Run Alembic migrations from code (`slatimer db upgrade`, tests), no alembic.ini needed."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, text

import migrations

SCRIPTS = Path(migrations.__file__).parent


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(SCRIPTS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the schema at `engine` up to `revision` inside one connection."""
    config = alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def downgrade(engine: Engine, revision: str) -> None:
    config = alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, revision)


def server_warnings(engine: Engine) -> list[str]:
    """What about the database server will hurt slatimer in production, said at start-up.

    Autovacuum off: nothing keeps the planner's statistics, and tables that grow during a wave
    (outcomes, ledger, alerts) are planned as if empty. Measured on B4 (docs/bench.md): a
    group's merchant-window read grew to 32 ms (7 ms with statistics) and lateness p99 to
    33-69 s (0.5 s)."""
    if engine.dialect.name != "postgresql":
        return []
    with engine.connect() as connection:
        autovacuum = connection.execute(text("SHOW autovacuum")).scalar()
    if autovacuum == "off":
        return [
            "autovacuum is off: planner statistics go stale as tables grow and merchant-window "
            "reads slow down with history; turn it on or ANALYZE regularly (docs/runtime.md)"
        ]
    return []
