"""The dashboard: server-rendered pages (Jinja2) and their static files."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from starlette.routing import BaseRoute

    from cronhub.hub import Hub


def routes(hub: Hub) -> list[BaseRoute]:
    """The dashboard's routes (pages under ``/``, static files under ``/static``)."""
    return []
