"""The ``Lock`` protocol (who runs a slot) and ``StorageLock``, the default provider."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from cronhub.runs import ClaimRequest, ClaimResult
    from cronhub.storage import Storage


@runtime_checkable
class Lock(Protocol):
    """Decides which instance runs a slot and keeps its lease."""

    def claim(
        self,
        requests: Sequence[ClaimRequest],
        *,
        instance: str,
        now: datetime,
        lease_ttl: float,
    ) -> list[ClaimResult]:
        """Claim slots, one result per request; see :meth:`cronhub.storage.Storage.claim`."""
        ...

    def heartbeat(
        self, run_ids: Iterable[int], *, instance: str, now: datetime, lease_ttl: float
    ) -> set[int]:
        """Renew leases; return the ids still owned. See ``Storage.heartbeat``."""
        ...


class StorageLock:
    """The default lock provider: the storage's unique slot key and its fenced leases."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage

    def claim(
        self,
        requests: Sequence[ClaimRequest],
        *,
        instance: str,
        now: datetime,
        lease_ttl: float,
    ) -> list[ClaimResult]:
        return self.storage.claim(requests, instance=instance, now=now, lease_ttl=lease_ttl)

    def heartbeat(
        self, run_ids: Iterable[int], *, instance: str, now: datetime, lease_ttl: float
    ) -> set[int]:
        return self.storage.heartbeat(run_ids, instance=instance, now=now, lease_ttl=lease_ttl)
