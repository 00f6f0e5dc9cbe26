"""The operations console: HTML pages over the read API's queries (Jinja2; docs/console.md).

Owns: the console's routes under /console (login, merchant, order and operator pages), its
signed session cookie, its templates and static files (the vendored uPlot chart library among
them) and the read-only queries only its pages need. It is mounted on the read API's app, so it
runs in the same process with the same keys.

May import worker.api (its views, keys and store gauges: one set of queries and one key rule
for JSON and HTML), worker.service, worker.process, config, store and models; never ingest,
timers, alerts, the Celery tasks or the command line. It sits above worker.api rather than the
other way round so the JSON API stays usable, and testable, without any HTML.
"""
