"""Celery tasks: thin adapters that validate a message, build a command and hand it to the
service layer. The durable-timer runtime (dispatcher, check task) is built on the core here."""
