"""The default lock provider: claims and leases kept by the storage itself."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cronhub.locking import StorageLock
from cronhub.plugins import hookimpl

if TYPE_CHECKING:
    from cronhub.hub import Hub


@hookimpl(trylast=True)
def cronhub_lock(hub: Hub) -> StorageLock:
    return StorageLock(hub.storage)
