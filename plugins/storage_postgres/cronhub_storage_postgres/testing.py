"""Test helpers: a throwaway PostgreSQL database per test.

The server is ``CRONHUB_TEST_POSTGRES_URL`` (default ``postgresql://postgres@127.0.0.1:5432/test``).
Where it cannot be reached, the ``postgres_database`` fixture skips the test with the reason;
with ``CRONHUB_REQUIRE_POSTGRES=1`` (CI) that skip is a failure instead. Import the fixtures
into a test module::

    from cronhub_storage_postgres.testing import postgres_database, postgres_server  # noqa: F401
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    import psycopg

#: The server tests create their databases on.
DEFAULT_SERVER_URL = "postgresql://postgres@127.0.0.1:5432/test"


def server_url() -> str:
    """The admin URL of the test server (its ``test`` database)."""
    return os.environ.get("CRONHUB_TEST_POSTGRES_URL", DEFAULT_SERVER_URL)


def _admin_connect(url: str) -> psycopg.Connection[Any]:
    import psycopg
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    return psycopg.connect(
        host=parsed.host,
        port=parsed.port or 5432,
        user=parsed.username,
        password=parsed.password,
        dbname=parsed.database,
        autocommit=True,
        connect_timeout=3,
    )


def create_database(prefix: str = "cronhub_test") -> str:
    """Create an empty database with a unique name; return its URL."""
    from sqlalchemy.engine import make_url

    url = server_url()
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with _admin_connect(url) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return make_url(url).set(database=name).render_as_string(hide_password=False)


def drop_database(db_url: str) -> None:
    """Drop the database of ``db_url``, disconnecting whoever is still connected."""
    from sqlalchemy.engine import make_url

    name = make_url(db_url).database
    with _admin_connect(server_url()) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def postgres_server() -> str:
    """The test server's URL; skips (or fails, with ``CRONHUB_REQUIRE_POSTGRES=1``) without it."""
    url = server_url()
    try:
        with _admin_connect(url) as conn:
            conn.execute("SELECT 1")
    except Exception as exc:
        reason = f"PostgreSQL at {url} is not reachable: {type(exc).__name__}: {exc}"
        if os.environ.get("CRONHUB_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"{reason} (CRONHUB_REQUIRE_POSTGRES=1)", pytrace=False)
        pytest.skip(reason)
    return url


@pytest.fixture
def postgres_database(postgres_server: str) -> Iterator[str]:
    """The URL of a new, empty database, dropped after the test."""
    db_url = create_database()
    try:
        yield db_url
    finally:
        drop_database(db_url)
