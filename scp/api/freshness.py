"""Read-your-writes for the HTTP API: an ASGI middleware that, before a request reaches a
route, waits until every instance acknowledged before it is indexed
(:class:`scp.services.visibility.IndexVisibility`, at most 2 s).  When the wait timed out
the answer is what is indexed, with ``Warning: 199 spacing-scp "..."`` (RFC 7234 5.5) and
``X-Index-Behind: true``.  ``/health``, ``/metrics`` and ``/openapi.json`` do not wait."""

from __future__ import annotations

from collections.abc import Callable

import anyio.to_thread
from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: Paths answered at once (they do not read instances).
NO_WAIT = frozenset({"/health", "/metrics", "/openapi.json"})
_WARNING = [
    (b"warning", b'199 spacing-scp "index behind: recently acknowledged instances may be missing"'),
    (b"x-index-behind", b"true"),
]


class ReadYourWrites:
    """ASGI middleware calling ``wait`` (``True``: caught up) before each request."""

    def __init__(self, app: ASGIApp, wait: Callable[[], bool]) -> None:
        self.app = app
        self.wait = wait

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (scope["path"].rstrip("/") or "/") in NO_WAIT:
            await self.app(scope, receive, send)
            return
        caught_up = await anyio.to_thread.run_sync(self.wait)
        if caught_up:
            await self.app(scope, receive, send)
            return

        async def send_with_warning(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *_WARNING]
            await send(message)

        await self.app(scope, receive, send_with_warning)
