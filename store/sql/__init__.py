"""The SQL store (SQLAlchemy 2.x), one module a concern, imports pointing down this list:

unit_of_work  one transaction: the plain repositories, or a batch of them
batch         the write-behind unit of work for a batch of orders (set-based)
repositories  the plain repositories: one statement per question
rows          domain values to rows and back, shared by the two above
engine        engines, sessions and the dialect questions
tables        the ORM tables (Alembic's migrations own the schema)
outbox        the alert outbox and merchants' endpoints
migrate       Alembic upgrades and server checks
"""
