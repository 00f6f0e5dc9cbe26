"""Durable timers: deadlines kept in the database, sent to Celery as ETA tasks, fired.

Owns: the dispatcher loop (claim due rows, group them, publish) and `fire_due`, which the
Celery check task calls to re-judge each order from current state. The way to publish is
injected, so this package imports neither Celery nor `tasks`; it imports worker.service,
worker.process, config, store and models.
"""
