"""Alembic environment: runs on the connection `Store.migrate` passes in (config.attributes["connection"]).

To write a new revision from a checkout:
    alembic -c /dev/null -x url=sqlite:///runs/dev.db revision --autogenerate -m "..."   (or copy 0001 by hand)
"""

from alembic import context
from sqlalchemy import create_engine

from kefu_router.store.tables import Base

config = context.config
connection = config.attributes.get("connection")


def run(connection) -> None:
    context.configure(connection=connection, target_metadata=Base.metadata,
                      render_as_batch=connection.dialect.name == "sqlite")  # SQLite alters tables by copying them
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":  # one migrator at a time when several workers start together
            connection.exec_driver_sql("SELECT pg_advisory_xact_lock(815015)")
        context.run_migrations()


if connection is not None:
    run(connection)
else:  # the alembic command line: -x url=...
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option("sqlalchemy.url")
    with create_engine(url).begin() as own:
        run(own)
