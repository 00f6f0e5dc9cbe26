"""The naive design measured beside slatimer: one Celery ETA task per deadline (docs/bench.md)."""
