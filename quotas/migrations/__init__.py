"""Alembic migrations of the usage ledger (:mod:`quotas.ledger`), run by ``Ledger()`` on open.

This package exists so that ``env.py``, ``script.py.mako`` and ``versions/*.py`` are installed
with Tessera; nothing here is imported at run time (alembic loads the files by path).
"""
