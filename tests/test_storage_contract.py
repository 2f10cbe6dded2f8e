"""The storage conformance suite against the built-in ``memory://`` and the SQLite plugin."""

from __future__ import annotations

import pytest
from cronhub_storage_sqlite import SqliteStorage
from cronhub_storage_sqlite import storage as sqlite_module

from cronhub.builtin.memory_storage import MemoryStorage
from cronhub.storage_contract import StorageContract


class TestMemoryStorage(StorageContract):
    @pytest.fixture
    def storage(self):
        storage = MemoryStorage("memory://")
        storage.open()
        yield storage
        storage.close()


class TestSqliteStorage(StorageContract):
    @pytest.fixture
    def storage(self, tmp_path):
        storage = SqliteStorage(f"sqlite:///{tmp_path / 'cronhub.db'}")
        storage.open()
        yield storage
        storage.close()


class TestSqliteStorageWithoutJson(StorageContract):
    """SQLite older than 3.38 (no built-in JSON functions): the generic SQL lookups."""

    @pytest.fixture
    def storage(self, tmp_path, monkeypatch):
        monkeypatch.setattr(sqlite_module, "_HAS_JSON", False)
        storage = SqliteStorage(f"sqlite:///{tmp_path / 'cronhub.db'}")
        storage.open()
        yield storage
        storage.close()


def test_job_set_uses_a_set_as_it_is_and_copies_other_collections():
    from cronhub.storage import job_set

    names = {"a": 1, "b": 2}.keys()
    assert job_set(names) is names  # the engine's 100,000 names are not copied per call
    assert job_set(["a", "b", "a"]) == frozenset({"a", "b"})
    assert job_set(None) is None
