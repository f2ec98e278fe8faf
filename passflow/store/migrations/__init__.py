"""Alembic's environment and revisions for the ledger database (run them through passflow.store.migrate)."""
