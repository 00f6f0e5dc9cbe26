"""slatimer's application: the service layer and the adapters that drive it.

    cli      the `slatimer` command: every process starts here and wires its adapters
    console  the operations console: HTML pages over the read API (Jinja2, uPlot)
    api      the read API and the store's /metrics (FastAPI)
    ingest   the order-queue consumer: batches, dead letters, brokers
    timers   durable timers: the dispatcher loop and the firing of due deadlines
    alerts   merchants' webhooks: the outbox relay and signed delivery
    service  the service layer: handlers, replay, merchant standing, `bootstrap`
    process  what every long-running process shares: logs, metrics, backoff, supervisor

Imports point down that list (cli > Celery `tasks` > console > api/ingest/timers/alerts >
service > process > config/store > models); api, ingest, timers and alerts never import each
other, and the console imports only the API of the four.
`make lint` checks this with import-linter (the contracts are in pyproject.toml).
"""
