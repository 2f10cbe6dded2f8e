"""The entry point of ``cronhub-storage-postgres``: answers ``postgresql://`` storage URLs."""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING

from cronhub.plugins import hookimpl

if TYPE_CHECKING:
    from cronhub_storage_postgres.storage import PostgresStorage

#: URL schemes this plugin answers (all use psycopg 3).
SCHEMES = ("postgresql:", "postgresql+psycopg:", "postgres:")

# Fail at plugin load time, where cronhub names this distribution, if a dependency is missing;
# but import them only when a postgresql:// URL is asked for.
for _module in ("sqlalchemy", "psycopg"):
    if importlib.util.find_spec(_module) is None:
        raise ModuleNotFoundError(f"No module named {_module!r}", name=_module)


@hookimpl
def cronhub_storage(url: str) -> PostgresStorage | None:
    if not url.startswith(SCHEMES):
        return None
    from cronhub_storage_postgres.storage import PostgresStorage

    return PostgresStorage(url)
