"""Alembic environment of the usage ledger.

`quotas.ledger.Ledger` runs the migrations in code with a connection it already holds (in
``config.attributes["connection"]``, inside a transaction that holds the write lock). For
development you can also drive alembic by hand without an ini file::

    python -c "from alembic import command; from quotas.ledger import alembic_config; \
command.revision(alembic_config(url='sqlite:///dev.sqlite'), 'what changed', autogenerate=True)"
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from quotas.ledger import VERSION_TABLE, Base

config = context.config
target_metadata = Base.metadata
version_table = config.get_main_option("version_table") or VERSION_TABLE


def _configure(**kwargs: object) -> None:
    context.configure(
        target_metadata=target_metadata,
        version_table=version_table,
        render_as_batch=True,  # SQLite cannot ALTER most things; batch mode copies the table
        compare_type=True,
        **kwargs,
    )


def run_migrations_offline() -> None:
    """Emit the SQL (``alembic upgrade --sql``) for the URL in ``sqlalchemy.url``."""
    _configure(url=config.get_main_option("sqlalchemy.url"), literal_binds=True, dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection=connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = create_engine(config.get_main_option("sqlalchemy.url") or "sqlite:///tessera-ledger.sqlite")
    try:
        with engine.begin() as conn:
            _configure(connection=conn)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
