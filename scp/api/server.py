"""A small, dependency-free HTTP server for the JSON API.

Read-only, loopback by default, optional bearer token.  Errors are problem
bodies (RFC 9457, ``application/problem+json``).  Routes are declared in
:mod:`scp.api.routes`.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

log = logging.getLogger("spacing_scp.http")

MAX_QUERY_LENGTH = 4096
#: Connections served at once; more are answered 503 at once (issue 6: a few slow or idle
#: clients must not take every thread).
MAX_CONNECTIONS = 32
#: Seconds a client gets to send a request line and headers (and to read the answer).
REQUEST_TIMEOUT_S = 10.0
_BUSY_BODY = b'{"type":"about:blank","title":"Service Unavailable","status":503}'
_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/problem+json\r\n"
    b"Retry-After: 1\r\nConnection: close\r\n"
    + f"Content-Length: {len(_BUSY_BODY)}\r\n\r\n".encode()
    + _BUSY_BODY
)


class Problem(Exception):
    """An error answered as a problem body."""

    def __init__(self, status: int, title: str, detail: str = "") -> None:
        super().__init__(detail or title)
        self.status = status
        self.title = title
        self.detail = detail


@dataclass
class Response:
    body: Any
    status: int = 200
    content_type: str = "application/json"


@dataclass
class Request:
    path: str
    params: dict[str, str]
    match: dict[str, str]


Handler = Callable[[Request], Response]


class Router:
    def __init__(self) -> None:
        self._routes: list[tuple[re.Pattern[str], Handler]] = []

    def get(self, pattern: str) -> Callable[[Handler], Handler]:
        regex = re.compile("^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", pattern) + "$")

        def deco(fn: Handler) -> Handler:
            self._routes.append((regex, fn))
            return fn

        return deco

    def resolve(self, path: str) -> tuple[Handler, dict[str, str]] | None:
        for regex, fn in self._routes:
            m = regex.match(path)
            if m:
                return fn, {k: unquote(v) for k, v in m.groupdict().items()}
        return None


def _make_handler(
    router: Router, token: str, request_timeout_s: float = REQUEST_TIMEOUT_S
) -> type[BaseHTTPRequestHandler]:
    class ApiHandler(BaseHTTPRequestHandler):
        server_version = "spacing-scp"
        sys_version = ""
        # socketserver.StreamRequestHandler: a timeout on the connection's socket.
        timeout = request_timeout_s

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("%s %s", self.address_string(), format % args)

        def _send(self, resp: Response) -> None:
            if isinstance(resp.body, str):
                data = resp.body.encode()
            else:
                data = json.dumps(resp.body, separators=(",", ":"), default=str).encode()
            self.send_response(resp.status)
            self.send_header("Content-Type", resp.content_type)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Content-Type-Options", "nosniff")
            if resp.status == 401:
                self.send_header("WWW-Authenticate", 'Bearer realm="spacing-scp"')
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        def _problem(self, p: Problem) -> None:
            body = {"type": "about:blank", "title": p.title, "status": p.status}
            if p.detail:
                body["detail"] = p.detail
            self._send(Response(body, p.status, "application/problem+json"))

        def _authorized(self) -> bool:
            if not token:
                return True
            header = self.headers.get("Authorization", "")
            scheme, _, value = header.partition(" ")
            return scheme.lower() == "bearer" and hmac.compare_digest(value.strip(), token)

        def do_GET(self) -> None:
            try:
                if len(self.path) > MAX_QUERY_LENGTH:
                    raise Problem(414, "URI Too Long")
                url = urlsplit(self.path)
                if url.path != "/health" and not self._authorized():
                    raise Problem(401, "Unauthorized", "a valid bearer token is required")
                found = router.resolve(url.path.rstrip("/") or "/")
                if found is None:
                    raise Problem(404, "Not Found", f"no resource at {url.path}")
                fn, match = found
                raw = parse_qs(url.query, keep_blank_values=True, max_num_fields=50)
                params = {k: v[-1] for k, v in raw.items()}
                self._send(fn(Request(url.path, params, match)))
            except Problem as p:
                self._problem(p)
            except ValueError as exc:
                self._problem(Problem(400, "Bad Request", str(exc)))
            except Exception:
                log.exception("HTTP %s failed", self.path)
                self._problem(Problem(500, "Internal Server Error"))

        do_HEAD = do_GET

        def _method_not_allowed(self) -> None:
            self._problem(Problem(405, "Method Not Allowed", "the API is read-only"))

        do_POST = do_PUT = do_DELETE = do_PATCH = _method_not_allowed

    return ApiHandler


class _BoundedHTTPServer(ThreadingHTTPServer):
    """At most ``max_connections`` connections in service; others get 503 and are closed."""

    def __init__(self, address: tuple[str, int], handler: Any, max_connections: int) -> None:
        self._slots = threading.BoundedSemaphore(max_connections)
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            log.warning("HTTP connection from %s refused: too many open", client_address[0])
            with contextlib.suppress(OSError):
                request.settimeout(1.0)
                request.sendall(_BUSY)
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


class ApiServer:
    """Runs the API in a background thread."""

    def __init__(
        self,
        router: Router,
        host: str,
        port: int,
        token: str = "",
        *,
        request_timeout_s: float = REQUEST_TIMEOUT_S,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        handler = _make_handler(router, token, request_timeout_s)
        self.httpd = _BoundedHTTPServer((host, port), handler, max_connections)
        self.httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, name="http-api", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


__all__ = ["ApiServer", "HTTPStatus", "Problem", "Request", "Response", "Router"]
