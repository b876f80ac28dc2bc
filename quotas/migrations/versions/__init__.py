"""Ledger revisions, oldest first: ``0001_initial`` ... (alembic skips this file)."""
