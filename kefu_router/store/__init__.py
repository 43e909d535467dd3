"""The prediction log and feedback store (needs the serve extra: SQLAlchemy 2, Alembic, psycopg).

    tables.py      the tables, as SQLAlchemy 2 declarative models
    database.py    `Store`: open a SQLite file or a PostgreSQL URL, migrate, look up, add feedback, prune
    writer.py      `PredictionLog`: a background thread that writes predictions in batches, off the event loop
    migrations/    Alembic migrations, shipped in the package so an installed wheel can run them

The service opens the store named by KEFU_ROUTER_DB (default: `kefu_router.db`, a SQLite file in the
working directory, created and migrated on first start); `postgresql+psycopg://user:pass@host/db` names a
PostgreSQL database. Message text is not stored unless KEFU_ROUTER_STORE_TEXT is on, and then only
PII-masked (kefu_router.privacy); with KEFU_ROUTER_TEXT_HMAC_KEY set, every message row carries an
HMAC-SHA256 of its normalised text (kefu_router.normalize), so an export can check the customer's own
copy of the text against what the model read.
"""

from kefu_router.store.database import Store, StoreUnavailable, UnknownPrediction, database_url, text_hmac

__all__ = ["Store", "StoreUnavailable", "UnknownPrediction", "database_url", "text_hmac"]
