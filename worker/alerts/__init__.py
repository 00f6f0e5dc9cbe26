"""Merchant alerts: the outbox relay and signed webhook delivery (Standard Webhooks).

Owns: claiming due alerts, leasing them, the HTTP delivery with backoff, and endpoint safety
(no private addresses). The Celery task that sends a delivery is injected (tasks.alerts), so
this package never imports `tasks`; it imports worker.process, config, store and models.
"""
