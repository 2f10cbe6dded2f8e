"""cronhub-storage-sqlite: cronhub's history, claims and leases in one SQLite file.

``SqliteStorage`` and ``network_filesystem`` are imported on first use, so that loading the
plugin (which every ``cronhub`` command does) does not import SQLAlchemy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cronhub_storage_sqlite.storage import SqliteStorage, network_filesystem

__version__ = "0.1.0"

__all__ = ["SqliteStorage", "__version__", "network_filesystem"]


def __getattr__(name: str) -> Any:
    if name in ("SqliteStorage", "network_filesystem"):
        from cronhub_storage_sqlite import storage

        return getattr(storage, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
