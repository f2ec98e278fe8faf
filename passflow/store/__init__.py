"""What passflow keeps in a ledger database (SQLite file or PostgreSQL), and its schema versions.

* :mod:`.schema` — the one ``MetaData`` with every passflow table
* :mod:`.migrate` — Alembic migrations (``migrations/``): upgrade, current revision, drift check;
  opening a ledger checks its revision
* :mod:`.ledger` — issuance rows, runs and the campaign lock
* :mod:`.updates` — update history, handled events, diff baseline
* :mod:`.events` — vendor callbacks and install status
"""
