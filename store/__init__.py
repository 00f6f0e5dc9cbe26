"""Persistence: the unit of work and its repositories (the ports in `store.base`), in memory
(`store.memory`: replay, unit tests) and in SQL (`store.sql`: SQLite by default, PostgreSQL in
production). May import models only; knows no queue, broker or web framework.
"""
