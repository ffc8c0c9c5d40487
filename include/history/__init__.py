"""The project database: the ingest ledger, quarantined rows and the training history.

Owns: the SQLAlchemy models, engines, idempotent upserts and the Alembic migrations that alone create and change
the schema. Never builds SQL from strings. Migrations run only where the database is written (``make run``, DAG
tasks, the command line); readers such as the UI plugin open it without migrating.
"""
