"""Security of the web app: the token, CSRF protection, the login page and response headers.

- **Token.** With a token, every route but ``/healthz`` (and the login page) needs
  ``Authorization: Bearer <token>`` or the ``cronhub_token`` cookie (HttpOnly,
  ``SameSite=Strict``) that ``POST /login`` sets. Tokens are compared in constant time.
  Without one, an HTML request for a page is redirected to ``/login?next=<page>``; any other
  request gets a 401 JSON error.
- **CSRF.** A non-HttpOnly ``cronhub_csrf`` cookie (random, ``SameSite=Strict``) is set on
  every response to a request that lacks it, and its value is in ``request.state.csrf_token``
  for forms. An unsafe request (``POST``, ``PUT``, ``PATCH``, ``DELETE``) authenticated by the
  cookie, or sent by a browser (it has an ``Origin``, ``Sec-Fetch-*`` or ``Referer`` header,
  which browsers add to every cross-site form or script request) when no token is set, must
  repeat that value in the ``X-CSRF-Token`` header or the ``csrf_token`` form field, else 403.
  A valid bearer header exempts a request: browsers never add one on their own. ``POST
  /login`` is always checked.
- **Host.** ``cronhub serve`` without a token, bound to a loopback address, accepts only
  loopback names in the ``Host`` header, so a web page cannot reach it by DNS rebinding.
- **Headers.** Every response carries the Content-Security-Policy below (no inline script or
  style anywhere), ``X-Content-Type-Options: nosniff``, ``Referrer-Policy: same-origin`` and
  ``X-Frame-Options: DENY``.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
import secrets
from collections.abc import Collection
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, quote, urlencode, urlsplit

import jinja2
from starlette.requests import HTTPConnection, Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

TOKEN_COOKIE = "cronhub_token"
CSRF_COOKIE = "cronhub_csrf"
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf_token"
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),
)
#: Paths reachable without the token.
OPEN_PATHS = frozenset({"/healthz", "/login", "/login.css"})
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
#: Headers only browsers add on their own: their presence makes a request a browser's.
_BROWSER_HEADERS = (b"origin", b"sec-fetch-site", b"sec-fetch-mode", b"referer")
#: The longest form body read for its CSRF field or the login token.
MAX_FORM_BODY = 64 * 1024
#: How long the login cookie lasts (seconds).
COOKIE_MAX_AGE = 30 * 24 * 3600
_CSRF_VALUE = re.compile(r"^[A-Za-z0-9_-]{32,128}$")
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})


def cookie_value(token: str) -> str:
    """What the login cookie holds: a digest of the token (the token itself never leaves)."""
    return hashlib.sha256(b"cronhub login cookie\0" + token.encode()).hexdigest()


def token_matches(given: str | None, token: str) -> bool:
    """Constant-time comparison of ``given`` with ``token``."""
    if not given:
        return False
    return hmac.compare_digest(given.encode(), token.encode())


def safe_next(value: str | None) -> str:
    """``value`` if it is a local path of this app (``/jobs/x?y=1``), else ``/``."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    if any(ord(char) < 32 or ord(char) == 127 for char in value):
        return "/"
    parts = urlsplit(value)
    if parts.scheme or parts.netloc:
        return "/"
    return value


def app_path(scope: Scope) -> str:
    """The request's path inside the app (without the ``root_path`` it is mounted under)."""
    path: str = scope.get("path", "/")
    root: str = scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :]
    return path or "/"


def _root(scope: Scope) -> str:
    return str(scope.get("root_path", "")).rstrip("/")


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return bytes(value).decode("latin-1")
    return None


def _accepts_html(scope: Scope) -> bool:
    return "text/html" in (_header(scope, b"accept") or "")


def _is_browser(scope: Scope) -> bool:
    names = {key for key, _ in scope.get("headers", ())}
    return any(name in names for name in _BROWSER_HEADERS)


def _is_https(scope: Scope) -> bool:
    return scope.get("scheme") == "https"


def _host_name(scope: Scope) -> str:
    host = (_header(scope, b"host") or "").strip().lower()
    if host.startswith("["):  # [::1]:8000
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address) is this machine's loopback."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def cookie_header(
    name: str,
    value: str,
    scope: Scope,
    *,
    http_only: bool,
    max_age: int | None = None,
) -> str:
    """A ``Set-Cookie`` value scoped to the app's root path."""
    parts = [f"{name}={value}", f"Path={_root(scope) or '/'}", "SameSite=Strict"]
    if http_only:
        parts.append("HttpOnly")
    if max_age is not None:
        parts.append(f"Max-Age={max_age}")
    if _is_https(scope):
        parts.append("Secure")
    return "; ".join(parts)


def error_response(
    status: int, error: str, detail: Any = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    """The API's error body: ``{"error": ..., "detail": ...}``."""
    return JSONResponse({"error": error, "detail": detail}, status_code=status, headers=headers)


class SecurityHeaders:
    """Adds the CSP and the other security headers to every response (outermost middleware)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {bytes(key).lower() for key, _ in headers}
                headers += [(k, v) for k, v in SECURITY_HEADERS if k not in present]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


class Guard:
    """Token, CSRF and host checks; see the module docstring.

    :param token: The token every request needs, or ``None`` for none.
    :param allowed_hosts: Accept only these ``Host`` names (``None``: any).
    """

    def __init__(
        self, app: ASGIApp, *, token: str | None, allowed_hosts: Collection[str] | None = None
    ) -> None:
        self.app = app
        self.token = token or None
        self.cookie = cookie_value(token) if token else None
        self.allowed_hosts = {h.lower() for h in allowed_hosts} if allowed_hosts else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await self._websocket(scope, receive, send)
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        csrf = request.cookies.get(CSRF_COOKIE, "")
        if not _CSRF_VALUE.match(csrf):
            csrf = secrets.token_urlsafe(32)
            send = _setting_cookie(send, cookie_header(CSRF_COOKIE, csrf, scope, http_only=False))
        state = scope.setdefault("state", {})
        state["csrf_token"] = csrf
        state["auth"] = None

        if self.allowed_hosts is not None and _host_name(scope) not in self.allowed_hosts:
            detail = (
                f"Host {_host_name(scope)!r} is not this server's loopback name; without a token "
                "cronhub serve only answers requests for localhost (DNS rebinding protection)"
            )
            await error_response(403, "host not allowed", detail)(scope, receive, send)
            return

        path, method = app_path(scope), scope["method"]
        if path == "/healthz":
            await self.app(scope, receive, send)
            return
        if self.token is not None:
            authorization = request.headers.get("authorization", "")
            scheme, _, given = authorization.partition(" ")
            if scheme.lower() == "bearer" and token_matches(given.strip(), self.token):
                state["auth"] = "bearer"
            elif self._cookie_matches(request.cookies.get(TOKEN_COOKIE)):
                state["auth"] = "cookie"
            elif path not in OPEN_PATHS:
                await self._refuse(scope, receive, send, bad_bearer=bool(authorization))
                return

        needs_csrf = state["auth"] == "cookie" or _is_browser(scope) or path == "/login"
        if method in UNSAFE_METHODS and state["auth"] != "bearer" and needs_csrf:
            receive, sent = await self._csrf_value(scope, receive)
            if not sent or not hmac.compare_digest(sent.encode(), csrf.encode()):
                detail = (
                    f"send the value of the {CSRF_COOKIE} cookie in the X-CSRF-Token header "
                    f"(or the {CSRF_FIELD} form field)"
                )
                await error_response(403, "CSRF check failed", detail)(scope, receive, send)
                return
        await self.app(scope, receive, send)

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        """A plugin's WebSocket route needs the token too (a browser's cookie, or a bearer)."""
        if self.token is not None:
            request = HTTPConnection(scope)
            scheme, _, given = request.headers.get("authorization", "").partition(" ")
            bearer = scheme.lower() == "bearer" and token_matches(given.strip(), self.token)
            if not bearer and not self._cookie_matches(request.cookies.get(TOKEN_COOKIE)):
                await send({"type": "websocket.close", "code": 1008})  # policy violation
                return
        await self.app(scope, receive, send)

    def _cookie_matches(self, value: str | None) -> bool:
        assert self.token is not None and self.cookie is not None
        if not value:
            return False
        # The cookie holds the digest that POST /login sets; the raw token is accepted too.
        return hmac.compare_digest(value.encode(), self.cookie.encode()) or token_matches(
            value, self.token
        )

    async def _refuse(
        self, scope: Scope, receive: Receive, send: Send, *, bad_bearer: bool
    ) -> None:
        path = app_path(scope)
        api = path.startswith("/api/") or path in ("/api", "/metrics")
        if scope["method"] in ("GET", "HEAD") and not api and _accepts_html(scope):
            query = bytes(scope.get("query_string", b"")).decode("latin-1")
            target = path + ("?" + query if query else "")
            location = f"{_root(scope)}/login?{urlencode({'next': target})}"
            await RedirectResponse(location, status_code=303)(scope, receive, send)
            return
        detail = (
            "the bearer token is not this server's"
            if bad_bearer
            else "send Authorization: Bearer <token> (the token given to cronhub serve)"
        )
        response = error_response(
            401,
            "authentication required",
            detail,
            headers={"WWW-Authenticate": 'Bearer realm="cronhub"'},
        )
        await response(scope, receive, send)

    async def _csrf_value(self, scope: Scope, receive: Receive) -> tuple[Receive, str | None]:
        """The CSRF value the request carries, and a ``receive`` that replays a read body."""
        header = _header(scope, CSRF_HEADER.encode())
        if header:
            return receive, header
        content_type = (_header(scope, b"content-type") or "").split(";")[0].strip().lower()
        if content_type != "application/x-www-form-urlencoded":
            return receive, None
        body, replay = await read_body(receive, MAX_FORM_BODY)
        if body is None:
            return replay, None
        fields = parse_qs(body.decode("latin-1"), max_num_fields=100)
        return replay, (fields.get(CSRF_FIELD) or [None])[0]


async def read_body(receive: Receive, limit: int) -> tuple[bytes | None, Receive]:
    """Read a request body of at most ``limit`` bytes (``None`` if longer) and a replayer."""
    chunks: list[bytes] = []
    size = 0
    more = True
    messages: list[Message] = []
    while more:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        chunks.append(chunk)
        more = message.get("more_body", False)
        if size > limit:
            break
    pending = list(messages)

    async def replay() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    body = b"".join(chunks) if size <= limit and not more else None
    return body, replay


def _setting_cookie(send: Send, value: str) -> Send:
    async def send_with_cookie(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = [*message.get("headers", []), (b"set-cookie", value.encode("latin-1"))]
            message = {**message, "headers": headers}
        await send(message)

    return send_with_cookie


# -- the login page ----------------------------------------------------------------------------

_templates = jinja2.Environment(
    loader=jinja2.PackageLoader("cronhub.web", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
)


def _login_form(request: Request, *, next_path: str, error: str | None, status: int) -> Response:
    html = _templates.get_template("login.html").render(
        base=_root(request.scope),
        next=next_path,
        csrf_token=request.state.csrf_token,
        error=error,
    )
    return HTMLResponse(html, status_code=status, headers={"Cache-Control": "no-store"})


def login_routes(token: str | None) -> list[Route]:
    """``GET``/``POST /login``, ``POST /logout`` and the login page's stylesheet."""

    async def login_page(request: Request) -> Response:
        next_path = safe_next(request.query_params.get("next"))
        if token is None or request.state.auth is not None:
            return RedirectResponse(_root(request.scope) + _quoted(next_path), status_code=303)
        return _login_form(request, next_path=next_path, error=None, status=200)

    async def login(request: Request) -> Response:
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != "application/x-www-form-urlencoded":
            return error_response(
                415, "unsupported media type", "POST /login takes an HTML form (urlencoded)"
            )
        body, _ = await read_body(request.receive, MAX_FORM_BODY)
        if body is None:
            return error_response(413, "form too large", f"at most {MAX_FORM_BODY} bytes")
        fields = parse_qs(body.decode("utf-8", "replace"), max_num_fields=100)
        next_path = safe_next((fields.get("next") or ["/"])[0])
        target = _root(request.scope) + _quoted(next_path)
        if token is None:
            return RedirectResponse(target, status_code=303)
        if not token_matches((fields.get("token") or [""])[0], token):
            return _login_form(
                request, next_path=next_path, error="That is not the token.", status=401
            )
        response = RedirectResponse(target, status_code=303)
        response.headers.append(
            "set-cookie",
            cookie_header(
                TOKEN_COOKIE,
                cookie_value(token),
                request.scope,
                http_only=True,
                max_age=COOKIE_MAX_AGE,
            ),
        )
        return response

    async def logout(request: Request) -> Response:
        if "text/html" in request.headers.get("accept", ""):
            response: Response = RedirectResponse(_root(request.scope) + "/login", status_code=303)
        else:
            response = Response(status_code=204)
        response.headers.append(
            "set-cookie",
            cookie_header(TOKEN_COOKIE, "", request.scope, http_only=True, max_age=0),
        )
        return response

    async def stylesheet(request: Request) -> Response:
        css = resources.files("cronhub.web").joinpath("login.css").read_text(encoding="utf-8")
        return Response(
            css, media_type="text/css", headers={"Cache-Control": "public, max-age=3600"}
        )

    return [
        Route("/login", login_page, methods=["GET"], name="login_page"),
        Route("/login", login, methods=["POST"], name="login"),
        Route("/logout", logout, methods=["POST"], name="logout"),
        Route("/login.css", stylesheet, methods=["GET"], name="login_css"),
    ]


def _quoted(path: str) -> str:
    return quote(path, safe="/?=&%:@!$'()*+,;~-._")
