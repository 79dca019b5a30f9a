"""Serves the API with uvicorn on a thread of the node's process.

:class:`ApiServer` binds its socket at once (a busy port fails ``Node.start``, and port 0
gives a free port known before the first request), runs a ``uvicorn.Server`` on a daemon
thread and stops it within a bound. Limits (issue 6):

* at most ``max_connections`` connections served at once; a request on one more is
  answered 503 at once (uvicorn ``limit_concurrency``);
* a client has ``request_timeout_s`` to send its request line and headers, on a new
  connection and between requests on a kept-alive one (:class:`_RequestTimeoutH11`); a
  client trickling its headers a byte at a time is cut off all the same.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from typing import Any

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger("spacing_scp.http")

#: Connections served at once; more are answered 503 (a few slow or idle clients must not
#: take every slot).
MAX_CONNECTIONS = 32
#: Seconds a client gets to send a request line and headers.
REQUEST_TIMEOUT_S = 10.0
#: Seconds ``stop`` lets running requests finish.
SHUTDOWN_GRACE_S = 5.0


class _RequestTimeoutH11(H11Protocol):
    """uvicorn's h11 protocol, with its keep-alive timer armed from the connection's start
    and cancelled by a complete request only (uvicorn arms it after a response only, and
    cancels it on any byte received)."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.timeout_keep_alive_task = self.loop.call_later(
            self.timeout_keep_alive, self.timeout_keep_alive_handler
        )

    def data_received(self, data: bytes) -> None:
        # The timer stays armed until handle_events sees the whole request (h11.Request).
        self.conn.receive_data(data)
        self.handle_events()


class ApiServer:
    """Runs ``app`` (an ASGI application, :func:`scp.api.app.build_app`) on a thread."""

    def __init__(
        self,
        app: Any,
        host: str,
        port: int,
        *,
        request_timeout_s: float = REQUEST_TIMEOUT_S,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._socket = socket.socket(family, socket.SOCK_STREAM)
        try:
            self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._socket.bind((host, port))
            self._socket.listen(128)
        except OSError:
            self._socket.close()
            raise
        _quiet_uvicorn()
        config = uvicorn.Config(
            app,
            http=_RequestTimeoutH11,
            loop="asyncio",
            lifespan="off",
            ws="none",
            log_config=None,
            access_log=False,
            proxy_headers=False,
            server_header=False,
            # uvicorn counts the connection asking too: N + 1 lets N be served at once.
            limit_concurrency=max_connections + 1,
            timeout_keep_alive=max(1, round(request_timeout_s)),
            timeout_graceful_shutdown=max(1, round(SHUTDOWN_GRACE_S)),
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run,
            kwargs={"sockets": [self._socket]},
            name="http-api",
            daemon=True,
        )

    @property
    def port(self) -> int:
        return int(self._socket.getsockname()[1])

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop accepting, let running requests finish (at most :data:`SHUTDOWN_GRACE_S`),
        close idle connections and the socket."""
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(SHUTDOWN_GRACE_S + 5)
            if self._thread.is_alive():
                log.warning("HTTP API did not stop within %.0fs", SHUTDOWN_GRACE_S + 5)
        self._socket.close()


def _quiet_uvicorn() -> None:
    """uvicorn announces start and stop at INFO under ``uvicorn.error``; the node logs its
    own line. Its warnings and errors still show. A level set by the operator is kept."""
    logger = logging.getLogger("uvicorn.error")
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.WARNING)


__all__ = ["MAX_CONNECTIONS", "REQUEST_TIMEOUT_S", "ApiServer"]
