"""Alembic environment: migrations run on the connection ``db.migrate`` hands over (async engine, run_sync)."""

from alembic import context

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=None, transaction_per_migration=True)
with context.begin_transaction():
    context.run_migrations()
