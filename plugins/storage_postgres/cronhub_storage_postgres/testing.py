"""Test helpers: a throwaway PostgreSQL database per test.

The server is ``CRONHUB_TEST_POSTGRES_URL`` (default ``postgresql://postgres@127.0.0.1:5432/test``).
Where it cannot be reached, the ``postgres_database`` fixture skips the test with the reason;
with ``CRONHUB_REQUIRE_POSTGRES=1`` (CI) that skip is a failure instead. Import the fixtures
into a test module::

    from cronhub_storage_postgres.testing import postgres_database, postgres_server  # noqa: F401

Tests that stop the database use ``private_postgres`` instead: a server of their own
(:class:`PrivateServer`), made with the installed ``initdb`` and ``pg_ctl``.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
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


# -- a private server, for tests that stop and start the database ------------------------------

#: Where PostgreSQL's server binaries are looked for (Debian and Ubuntu packages).
BINARY_GLOB = "/usr/lib/postgresql/*/bin"


def find_server_binaries() -> Path | None:
    """The directory holding ``initdb`` and ``pg_ctl``: ``CRONHUB_TEST_POSTGRES_BIN``, the
    newest of :data:`BINARY_GLOB`, or the one on ``PATH``; ``None`` when there is none."""
    configured = os.environ.get("CRONHUB_TEST_POSTGRES_BIN")
    candidates = [Path(configured)] if configured else []
    candidates += sorted(
        (Path(p) for p in glob.glob(BINARY_GLOB)),
        key=lambda p: _version_key(p.parent.name),
        reverse=True,
    )
    on_path = shutil.which("pg_ctl")
    if on_path:
        candidates.append(Path(on_path).parent)
    for directory in candidates:
        if (directory / "initdb").is_file() and (directory / "pg_ctl").is_file():
            return directory
    return None


def _version_key(name: str) -> tuple[int, ...]:
    return tuple(int(part) for part in name.split(".") if part.isdigit())


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PrivateServer:
    """A throwaway PostgreSQL server of this test's own, which it may stop and start.

    ``initdb`` makes a cluster in a new temporary directory (trust authentication, superuser
    ``postgres``); the server listens on a free loopback port, with its Unix socket in that
    directory. Running as root, the server runs as the ``postgres`` OS user (PostgreSQL refuses
    root). The shared test server is never touched.

    :param binaries: The directory holding ``initdb``, ``pg_ctl`` and ``postgres``.
    :raises RuntimeError: When ``initdb`` fails (its output is in the message).
    """

    def __init__(self, binaries: Path) -> None:
        self.binaries = binaries
        self.root = Path(tempfile.mkdtemp(prefix="cronhub-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.port = _free_port()
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            import pwd

            try:
                account = pwd.getpwnam("postgres")
            except KeyError as exc:
                shutil.rmtree(self.root, ignore_errors=True)
                raise RuntimeError(
                    "running as root, and there is no 'postgres' OS user to run PostgreSQL as"
                ) from exc
            os.chown(self.root, account.pw_uid, account.pw_gid)
            self._as_user = ["runuser", "-u", "postgres", "--"]
        try:
            self._command(
                "initdb",
                "-D",
                str(self.data),
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--no-sync",
                timeout=120,
            )
        except BaseException:
            shutil.rmtree(self.root, ignore_errors=True)
            raise

    @property
    def url(self) -> str:
        """The URL of its ``postgres`` database."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def database_url(self, name: str) -> str:
        """The URL of database ``name`` on this server."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"

    def create_database(self, name: str) -> str:
        """Create database ``name``; return its URL."""
        import psycopg

        with psycopg.connect(self.url, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.database_url(name)

    def _command(self, tool: str, *args: str, timeout: float) -> str:
        argv = [*self._as_user, str(self.binaries / tool), *args]
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"{tool} exited {done.returncode}: {(done.stdout + done.stderr).strip()[-2000:]}"
            )
        return done.stdout

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
            " -c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
        self._command(
            "pg_ctl",
            "start",
            "-w",
            "-t",
            "60",
            "-D",
            str(self.data),
            "-l",
            str(self.log),
            "-o",
            options,
            timeout=90,
        )

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``fast``: roll back and disconnect; ``immediate``: like a crash)."""
        self._command(
            "pg_ctl", "stop", "-w", "-t", "60", "-D", str(self.data), "-m", mode, timeout=90
        )

    @property
    def running(self) -> bool:
        """Whether ``pg_ctl status`` finds the server running."""
        argv = [*self._as_user, str(self.binaries / "pg_ctl"), "status", "-D", str(self.data)]
        done = subprocess.run(argv, capture_output=True, timeout=30, stdin=subprocess.DEVNULL)
        return done.returncode == 0

    def remove(self) -> None:
        """Stop the server if it runs and delete its directory."""
        try:
            if self.running:
                self.stop("immediate")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def private_postgres() -> Iterator[PrivateServer]:
    """A started :class:`PrivateServer`, removed after the test.

    Skips when PostgreSQL's server binaries are not installed (set
    ``CRONHUB_TEST_POSTGRES_BIN`` to their directory); with ``CRONHUB_REQUIRE_POSTGRES=1``
    that is a failure instead.
    """
    binaries = find_server_binaries()
    if binaries is None:
        reason = (
            f"PostgreSQL server binaries (initdb, pg_ctl) not found in {BINARY_GLOB}, on PATH"
            " or in CRONHUB_TEST_POSTGRES_BIN"
        )
        if os.environ.get("CRONHUB_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"{reason} (CRONHUB_REQUIRE_POSTGRES=1)", pytrace=False)
        pytest.skip(reason)
    server = PrivateServer(binaries)
    try:
        server.start()
        yield server
    finally:
        server.remove()
