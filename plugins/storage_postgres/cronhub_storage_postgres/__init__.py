"""cronhub-storage-postgres: cronhub's history, claims and leases in PostgreSQL.

Several ``cronhub worker`` / ``serve`` instances on several hosts share one database and behave
as one scheduler. ``PostgresStorage`` is imported on first use, so that loading the plugin
(which every ``cronhub`` command does) does not import SQLAlchemy or psycopg.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cronhub_storage_postgres.storage import PostgresStorage

__version__ = "0.1.0"

__all__ = ["PostgresStorage", "__version__"]


def __getattr__(name: str) -> Any:
    if name == "PostgresStorage":
        from cronhub_storage_postgres import storage

        return storage.PostgresStorage
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
