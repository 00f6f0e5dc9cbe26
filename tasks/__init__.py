"""Celery tasks: thin adapters over the service layer, a few lines each.

`tasks.app` builds the Celery app from settings; `tasks.timers` is the check task that fires due
deadlines (worker.timers.fire_due) and the publisher the dispatcher is given; `tasks.alerts` is
the delivery task (worker.alerts.deliver) and the relay's publisher. Only the command line
imports this package.
"""
