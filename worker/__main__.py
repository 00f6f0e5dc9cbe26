"""`python -m worker …` is the same as the `slatimer` command (used to spawn child processes)."""

from worker.cli.main import app

app()
