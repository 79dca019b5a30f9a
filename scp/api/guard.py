"""What every request passes before the routes: method, URI length, bearer token.

A pure ASGI middleware around the FastAPI app (:func:`scp.api.app.build_app`):

* the API is read-only but for STOW-RS, deletions and the web page: a method other than GET
  or HEAD is 405 (HEAD is answered as GET; uvicorn leaves the body out), except DELETE on
  :data:`DELETE_PATHS` (``/studies|series|instances/{uid}``, issue 20) and POST on
  :data:`WRITE_PATHS` (``/dicom-web/studies[/{study}]``, PS3.18 10.5) and the web page's
  sign-in and actions (``POST /ui/...``, :mod:`scp.api.ui.actions`, which check the token
  and CSRF themselves);
* a request target over :data:`MAX_TARGET_LENGTH` characters is 414;
* with a token, every path but ``/health`` and the web page (``/ui``: read-only without
  the token, issue 19) needs ``Authorization: Bearer TOKEN`` (401);
* ``/series/`` is ``/series`` (no redirects);
* every answer carries ``Cache-Control: no-store`` and ``X-Content-Type-Options: nosniff``;
* an exception from a route is logged and answered 500 with no detail.
"""

from __future__ import annotations

import hmac
import logging
import re

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from scp.api.problems import problem

log = logging.getLogger("spacing_scp.http")

#: Longest request target (path and query) served; longer ones get 414.
MAX_TARGET_LENGTH = 4096
#: Paths served without the bearer token (load balancers' health checks).
OPEN_PATHS = frozenset({"/health"})
#: The web page: open to read; its POSTs check the token and CSRF themselves.
UI_PREFIX = "/ui"
#: Paths that take POST (STOW-RS, PS3.18 10.5.1).
WRITE_PATHS = re.compile(r"/dicom-web/studies(/[^/\s]+)?")
#: Paths that take DELETE (a person's deletion, issue 20; the route needs the token).
DELETE_PATHS = re.compile(r"/(studies|series|instances)/[^/\s]+")
_HEADERS = [(b"cache-control", b"no-store"), (b"x-content-type-options", b"nosniff")]
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="spacing-scp"'}


class Guard:
    """ASGI middleware enforcing the module's rules in front of ``app``."""

    def __init__(self, app: ASGIApp, token: str = "") -> None:
        self.app = app
        self.token = token

    def _authorized(self, scope: Scope) -> bool:
        if not self.token:
            return True
        header = next((v for k, v in scope["headers"] if k == b"authorization"), b"")
        scheme, _, value = header.decode("latin-1").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(
            value.strip().encode(), self.token.encode()
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message["headers"] = [*message.get("headers", []), *_HEADERS]
            await send(message)

        path = scope["path"].rstrip("/") or "/"
        ui = path == UI_PREFIX or path.startswith(UI_PREFIX + "/")
        method = scope["method"]
        writable = ui or bool(WRITE_PATHS.fullmatch(path))
        deletable = bool(DELETE_PATHS.fullmatch(path))
        if method not in ("GET", "HEAD") and not (
            (method == "POST" and writable) or (method == "DELETE" and deletable)
        ):
            allow = "GET, HEAD, POST" if writable else "GET, HEAD"
            allow += ", DELETE" if deletable else ""
            answer = problem(405, "the API is read-only", {"Allow": allow})
        elif _target_length(scope) > MAX_TARGET_LENGTH:
            answer = problem(414, f"the request target is over {MAX_TARGET_LENGTH} characters")
        elif not ui and path not in OPEN_PATHS and not self._authorized(scope):
            answer = problem(401, "a valid bearer token is required", _CHALLENGE)
        else:
            try:
                method = "GET" if method == "HEAD" else method
                await self.app(
                    {**scope, "method": method, "path": path}, receive, send_with_headers
                )
            except Exception:
                log.exception("HTTP %s %s failed", scope["method"], scope["path"])
                if not started:
                    await problem(500)(scope, receive, send_with_headers)
            return
        await answer(scope, receive, send_with_headers)


def _target_length(scope: Scope) -> int:
    raw_path = scope.get("raw_path") or scope["path"].encode()
    query = scope.get("query_string") or b""
    return len(raw_path) + (len(query) + 1 if query else 0)
