"""The service layer: what happens when an event arrives or a deadline comes due.

Owns: the handlers (`record_event`, `fire_deadline`, `recalendar`), deterministic replay on a
virtual clock (in one process, or split by merchant over several: `partition`), a merchant's
standing, and `bootstrap`, which builds a process's dependencies
(settings, policy files, engine, unit of work, clock) from config. May import worker.process,
config, store and models; nothing here knows Celery, a broker or HTTP.
"""
