"""The read API (FastAPI): merchants' and operators' read-only views, API keys, /metrics.

Owns: HTTP routes, authentication by API key, response models and the store's Prometheus
collector. May import worker.service, worker.process, config, store and models; never the
other adapters (ingest, timers, alerts) or the command line.
"""
