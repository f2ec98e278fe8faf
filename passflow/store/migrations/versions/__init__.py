"""Alembic revisions, oldest first by ``down_revision``; each one is an ``upgrade``/``downgrade`` pair."""
