"""The entry point of ``cronhub-storage-sqlite``: answers ``sqlite:///`` storage URLs."""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING

from cronhub.plugins import hookimpl

if TYPE_CHECKING:
    from cronhub_storage_sqlite.storage import SqliteStorage

# Fail at plugin load time, where cronhub names this distribution, if SQLAlchemy is missing;
# but import it only when a sqlite:/// URL is asked for: commands such as `cronhub next`
# never need storage and should not pay for importing SQLAlchemy.
if importlib.util.find_spec("sqlalchemy") is None:
    raise ModuleNotFoundError("No module named 'sqlalchemy'", name="sqlalchemy")


@hookimpl
def cronhub_storage(url: str) -> SqliteStorage | None:
    if not url.startswith(("sqlite:", "sqlite+pysqlite:")):
        return None
    from cronhub_storage_sqlite.storage import SqliteStorage

    return SqliteStorage(url)
