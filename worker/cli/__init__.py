"""The `slatimer` command line (typer): one entry point for every process and tool.

Owns: argument parsing, one-line errors for users, and wiring each process from
`worker.service.bootstrap` and the adapters it runs (ingest, timers, alerts, api, the Celery
`tasks`). It is the only package that may import all of them; nothing imports it back.
"""
