"""A FastAPI application that embeds cronhub: its own routes, plus the dashboard under /cronhub.

Run it with ``uvicorn orders_app:app`` from this folder (see README.md). The scheduler runs in
the application's lifespan (``hub.lifespan``); the cronhub app mounted at ``/cronhub`` serves
the dashboard, the JSON API, ``/cronhub/healthz`` and ``/cronhub/metrics``.
"""

from __future__ import annotations

import threading

from fastapi import FastAPI

import cronhub

#: Storage and token come from the settings: ``CRONHUB_STORAGE`` / ``CRONHUB_TOKEN``, or
#: ``[tool.cronhub]`` in pyproject.toml, or ``cronhub.toml``.
hub = cronhub.Hub()

_synced = 0
_lock = threading.Lock()


@hub.job(every="5m", name="orders.sync_orders", tags=["orders"], retries=2)
def sync_orders(ctx: cronhub.RunContext) -> None:
    """Pretend to pull new orders from a shop; the app's own routes show the count."""
    global _synced
    with _lock:
        _synced += 1
        count = _synced
    ctx.log.info("synced orders (%d syncs so far)", count)


app = FastAPI(title="orders", lifespan=hub.lifespan)
app.mount("/cronhub", hub.asgi(token=hub.settings.get("token")))


@app.get("/")
def index() -> dict[str, str]:
    """What this service is, and where its jobs' dashboard lives."""
    return {"service": "orders", "dashboard": "/cronhub/"}


@app.get("/orders/synced")
def synced() -> dict[str, int]:
    """How many times the sync job ran in this process."""
    return {"synced": _synced}
