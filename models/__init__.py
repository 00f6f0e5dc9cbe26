"""The pure core of slatimer: the event contract, order state, policy, deadlines and penalties.

Nothing in this package talks to Celery, Redis, SQL or the system clock; every decision that
depends on time takes the time as an argument.
"""
