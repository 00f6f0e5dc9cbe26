"""Persistence: the unit of work and repositories, in memory (replay, unit tests) and in SQL."""
