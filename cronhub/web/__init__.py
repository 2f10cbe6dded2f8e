"""The web side of cronhub: the Starlette app behind ``cronhub serve`` and ``hub.asgi()``."""
