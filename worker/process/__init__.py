"""What every long-running process shares: JSON logs (structlog), Prometheus metrics,
backoff, and the supervisor that runs `slatimer run`'s children.

May import config only (and the standard library and its own libraries); it knows nothing of
the rules, the store or the adapters.
"""
