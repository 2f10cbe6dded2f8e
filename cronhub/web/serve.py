"""``cronhub serve``: the web app under uvicorn, with the scheduler in its lifespan.

The checks that protect a user from exposing an open dashboard run before anything listens:
a non-loopback address needs a token (or ``--insecure``), and the address is bound here, so
"address already in use" is one line and exit 2, not a traceback. On SIGTERM (or SIGINT)
uvicorn stops accepting connections, the event streams end at once, and the lifespan stops
the scheduler gracefully (running jobs get ``shutdown_grace`` seconds); the exit code is 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import signal
import socket
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING

from cronhub.config import mask_url
from cronhub.errors import UsageError
from cronhub.web.auth import LOOPBACK_NAMES

if TYPE_CHECKING:
    from starlette.applications import Starlette

    from cronhub.hub import Hub

log = logging.getLogger("cronhub.web")

#: Seconds uvicorn waits for open connections at shutdown before it closes them.
CONNECTIONS_GRACE = 10.0


def is_loopback_host(host: str) -> bool:
    """Whether every address ``host`` names is a loopback address (``127.0.0.1``, ``::1``)."""
    name = host.strip().strip("[]")
    if name.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(name, None, type=socket.SOCK_STREAM)
    except OSError:
        return False
    addresses = {info[4][0] for info in infos}
    return bool(addresses) and all(ipaddress.ip_address(a).is_loopback for a in addresses)


def resolve_token(flag: str | None, hub: Hub) -> str | None:
    """The token: ``--token``, else ``CRONHUB_TOKEN``, else the ``token`` setting."""
    if flag is not None:
        if not flag.strip():
            raise UsageError("--token must not be empty")
        return flag
    value = hub.settings.get("token")
    if value is not None and not str(value).strip():
        raise UsageError(f"the token setting (from {hub.settings.sources['token']}) is empty")
    return str(value) if value is not None else None


def check_exposure(host: str, token: str | None, insecure: bool) -> None:
    """Refuse to serve a non-loopback address without a token unless ``insecure``."""
    if token is None and not insecure and not is_loopback_host(host):
        raise UsageError(
            f"refusing to listen on {host} without a token: anyone who can reach it could run "
            "and cancel jobs; set --token or CRONHUB_TOKEN, or pass --insecure"
        )


def bind(host: str, port: int) -> socket.socket:
    """A listening-ready socket on ``host:port``; :class:`UsageError` when that fails."""
    try:
        infos = socket.getaddrinfo(
            host.strip("[]"), port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except OSError as exc:
        raise UsageError(f"--host {host!r}: cannot resolve it ({exc.strerror or exc})") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    return sock


def url_of(sock: socket.socket) -> str:
    """``http://host:port`` of a bound socket."""
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


@contextlib.contextmanager
def _quiet_sigterm() -> Iterator[None]:
    # uvicorn restores the handlers it replaced and re-raises the signal it caught after a
    # graceful shutdown; with the default SIGTERM handler that would kill the process with
    # status -15. A handler that does nothing here makes a SIGTERM'd serve exit 0.
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: None)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_server(
    hub: Hub,
    *,
    host: str,
    port: int,
    token: str | None,
    scheduler: bool,
    insecure: bool,
) -> None:
    """Check the options, bind, and serve until SIGTERM or SIGINT."""
    import uvicorn

    check_exposure(host, token, insecure)
    if hub.storage_url.startswith("memory://"):
        print("warning: memory:// storage: nothing persists after this process", file=sys.stderr)
    storage = hub.storage  # open it now: a bad URL is one line, before anything listens
    jobs = hub.jobs
    allowed = None
    if token is None and not insecure and is_loopback_host(host):
        # Without a token, answer only requests addressed to this machine (DNS rebinding).
        allowed = {*LOOPBACK_NAMES, host.strip("[]").lower()}
    app = hub.asgi(scheduler=scheduler, token=token, allowed_hosts=allowed)
    sock = bind(host, port)
    print(
        f"cronhub serve: {url_of(sock)} ({len(jobs)} job(s), storage {mask_url(storage.url)}, "
        f"scheduler {'on' if scheduler else 'off'}, "
        f"{'token required' if token else 'no token'})",
        file=sys.stderr,
        flush=True,
    )
    config = uvicorn.Config(
        app,
        lifespan="on",
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=int(CONNECTIONS_GRACE),
        server_header=False,
    )
    server = uvicorn.Server(config)
    with _quiet_sigterm():
        asyncio.run(_serve(server, app, sock))
    if not server.started:
        raise UsageError("the server did not start (see the messages above)")


async def _serve(server: object, app: Starlette, sock: socket.socket) -> None:
    import uvicorn

    assert isinstance(server, uvicorn.Server)

    async def end_streams_on_exit() -> None:
        # Open event streams never end by themselves, and uvicorn waits for every
        # connection before it runs the lifespan's shutdown: end them as soon as it exits.
        while not server.should_exit:
            await asyncio.sleep(0.1)
        app.state.runtime.events.close()

    watcher = asyncio.create_task(end_streams_on_exit())
    try:
        await server.serve(sockets=[sock])
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
