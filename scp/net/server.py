"""A listener that survives hostile peers: the guarded association server.

Transport protections (:class:`GuardedAssociationServer`, a documented subclass of
``pynetdicom.transport.ThreadedAssociationServer``, passed as ``server_class`` to
``AE.make_server``):

* every accepted socket gets a receive/send timeout, so a peer that stops in the
  middle of a PDU is cut off (pynetdicom's acceptor reads a PDU with a blocking
  ``recv`` and its network timeout is only checked between PDUs: without this, a
  stalled peer holds an association slot forever).  Until the association is
  accepted the timeout is ``min(acse_timeout, network_timeout)``, afterwards
  ``network_timeout``; a silent peer is closed by pynetdicom's ARTIM timer after
  ``acse_timeout``;
* a PDU whose announced length exceeds ``node.max_pdu_size`` (P-DATA-TF, PS3.8
  9.3.5, D.1) or :data:`MAX_ACSE_PDU` (any other PDU) is refused as soon as its
  6-byte header arrives, before anything is allocated for it;
* the TLS handshake runs in the connection's own thread with ``acse_timeout``
  (pynetdicom's ``get_request`` does it in the accept loop: one silent plain-TCP
  client on the TLS port would stop the node from accepting anyone);
* more than ``2 * node.max_associations + 2`` open connections: the next ones are closed
  at once (those between ``max_associations`` and that still get the proper reason 2).

:func:`start_listener` starts it for the node, with :func:`transport_bindings` among the
event handlers.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import ssl
import struct
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import pynetdicom
from pynetdicom import AE, evt
from pynetdicom.events import EventHandlerType
from pynetdicom.transport import ThreadedAssociationServer

from scp.config import Config
from scp.net import compat, reactor
from scp.net import tls as tls_mod

log = logging.getLogger("spacing_scp.security")

#: Largest PDU other than P-DATA-TF accepted (A-ASSOCIATE-RQ with 128 presentation
#: contexts of 30 transfer syntaxes each stays far below it).
MAX_ACSE_PDU = 1024 * 1024
_P_DATA_TF = 0x04


def transport_bindings() -> list[tuple[Any, Any]]:
    """The event handlers the protections above need on every association."""
    return [
        (evt.EVT_ACCEPTED, on_accepted),
        (evt.EVT_CONN_CLOSE, discard_partial_dataset),
    ]


def on_accepted(event: Any) -> None:
    """From now on a silent peer is judged by ``network_timeout`` (not ACSE's)."""
    sock = getattr(getattr(event.assoc.dul, "socket", None), "socket", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.settimeout(event.assoc.network_timeout)


def discard_partial_dataset(event: Any) -> None:
    """``EVT_CONN_CLOSE``: remove the file of a data set whose transfer never finished.

    pynetdicom writes a data set received in fragments to a temporary file (in the
    store's ``tmp/``, :func:`scp.net.ae.configure_pynetdicom`) and deletes it after the
    C-STORE handler ran; a message cut short by an A-ABORT or a dropped connection
    stays in ``assoc.dimse.message`` and its file would stay until the next start-up.
    A complete message is never there (the DIMSE provider hands it on and resets it).
    """
    handle = compat.partial_dataset_file(event.assoc)
    if handle is None:
        return
    compat.receive_error(handle.name)  # a write error held back for it is moot now
    with contextlib.suppress(OSError):
        handle.close()
    with contextlib.suppress(OSError):
        os.unlink(handle.name)
        log.info("discarded a data set cut short by the peer (%s)", os.path.basename(handle.name))


class PduLengthError(OSError):
    """A peer announced a PDU longer than the node accepts."""


class _GuardSaidIt(logging.Filter):
    """Drops pynetdicom's ERROR lines and traceback about a read that the PDU guard
    stopped (``dul.py``: "Connection closed before the entire PDU was received"): the
    guard logged one WARNING line naming the peer, and a port scan must not fill the log
    with tracebacks."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else sys.exc_info()[1]
        return not isinstance(exc, PduLengthError)


logging.getLogger("pynetdicom.dul").addFilter(_GuardSaidIt())


class _PduGuard:
    """Follows the PDU framing of the bytes read (PS3.8 9.3.1: type, reserved, length).

    Checks each PDU's announced length as soon as its 6-byte header has been read.
    """

    __slots__ = ("body_left", "header", "max_acse", "max_pdata", "peer")

    def __init__(self, max_pdata: int, max_acse: int, peer: str) -> None:
        self.max_pdata = max_pdata  # 0: unlimited
        self.max_acse = max_acse
        self.peer = peer
        self.header = bytearray()
        self.body_left = 0

    def feed(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            if self.body_left:
                take = min(self.body_left, len(view))
                self.body_left -= take
                view = view[take:]
                continue
            need = 6 - len(self.header)
            self.header += view[:need]
            view = view[need:]
            if len(self.header) == 6:
                pdu_type, _, length = struct.unpack(">BBL", self.header)
                self.header.clear()
                limit = self.max_pdata if pdu_type == _P_DATA_TF else self.max_acse
                if limit and length > limit:
                    log.warning(
                        "peer %s announced a PDU of type 0x%02X with %d bytes (limit %d): "
                        "connection closed",
                        self.peer,
                        pdu_type,
                        length,
                        limit,
                    )
                    raise PduLengthError(f"PDU of {length} bytes exceeds the limit of {limit}")
                self.body_left = length


_QUICKACK = getattr(socket, "TCP_QUICKACK", None)


def _quickack(sock: socket.socket) -> None:
    """Acknowledge at once what was just read (Linux ``TCP_QUICKACK``, re-armed per read).

    Many senders (Debian's dcmtk without ``TCP_NODELAY=1``, and modalities built on it)
    write each DIMSE message as a small header segment then the body, with Nagle's
    algorithm on: the body waits for the ACK of the header, and a delayed ACK costs ~40 ms
    per message (performance-notes.md: 3000 small instances took 141 s, 13.9 s with
    this).  The kernel clears the flag after use, hence one call per read.
    """
    if _QUICKACK is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)


class _GuardedSocket(socket.socket):
    """A TCP socket that checks PDU lengths as it reads (see :class:`_PduGuard`)."""

    pdu_guard: _PduGuard | None = None

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        data = super().recv(bufsize, flags)
        _quickack(self)
        if self.pdu_guard is not None:
            self.pdu_guard.feed(data)
        return data


class _GuardedSSLSocket(ssl.SSLSocket):
    """The same for a TLS socket (``SSLContext.sslsocket_class``)."""

    pdu_guard: _PduGuard | None = None

    def recv(self, buflen: int = 1024, flags: int = 0) -> bytes:
        data = super().recv(buflen, flags)
        _quickack(self)
        if self.pdu_guard is not None:
            self.pdu_guard.feed(data)
        return data


@dataclass(frozen=True)
class Limits:
    acse_timeout: float
    network_timeout: float
    max_pdu_size: int
    max_connections: int
    #: The listening socket is shared with the node's other processes (``[node]
    #: processes``): accept without blocking, the idlest process takes each connection.
    shared_listener: bool = False
    #: In an extra receiving process: the first process's listening socket, inherited.
    listen_fd: int | None = None
    #: Event-driven association reactors (:mod:`scp.net.reactor`) instead of pynetdicom's
    #: polling ones.
    event_reactor: bool = True


#: With a shared listening socket, seconds a process waits per association it already
#: serves before it tries to accept a new one (and at most).
SHARED_ACCEPT_DELAY_S = 0.002
SHARED_ACCEPT_DELAY_MAX_S = 0.02


class GuardedAssociationServer(ThreadedAssociationServer):
    """pynetdicom's threaded association server with the transport protections above.

    Only the socketserver hooks are overridden (``get_request``, ``verify_request``,
    ``process_request_thread``); association handling is pynetdicom's.
    """

    def __init__(self, *args: Any, limits: Limits, **kwargs: Any) -> None:
        self.limits = limits
        self._handshakes = 0
        #: Connections accepted and not finished yet (``id`` of the socket).
        self._open_connections: set[int] = set()
        self._count_lock = threading.Lock()
        if limits.event_reactor:
            if compat.supported():
                kwargs.setdefault("request_handler", reactor.EventDrivenRequestHandler)
            else:
                log.warning(
                    "pynetdicom %s is outside %s: its own (polling) reactors run",
                    pynetdicom.__version__,
                    compat.REQUIREMENT,
                )
        super().__init__(*args, **kwargs)
        if self.ssl_context is not None:
            self.ssl_context.sslsocket_class = _GuardedSSLSocket

    def server_bind(self) -> None:
        """Bind, or take over the listening socket the first process passed down.

        Several processes (``[node] processes``) accept from one listening socket, the
        pre-fork model: every process polls it, and the one that gets to ``accept`` first,
        usually the least busy one, takes the connection; the others see ``EAGAIN``
        (``BlockingIOError``, ignored by socketserver). ``SO_REUSEPORT`` was tried first:
        its hash of the peer's address put 3 or 4 of 4 concurrent associations on the same
        process in 7 runs out of 8 (bench W4).
        """
        if self.limits.listen_fd is not None:
            assert self.socket is not None
            self.socket.close()
            self.socket = socket.socket(fileno=self.limits.listen_fd)
            self.server_address = self.socket.getsockname()
        else:
            super().server_bind()
        if self.limits.shared_listener and self.socket is not None:
            self.socket.settimeout(0.0)

    def server_activate(self) -> None:
        if self.limits.listen_fd is None:  # an inherited socket listens already
            super().server_activate()

    def server_close(self) -> None:
        if self.limits.listen_fd is not None and self.socket is not None:
            # Only this process's descriptor: a shutdown() would stop every process's accept.
            self.socket.close()
            return
        super().server_close()

    def _guard(self, peer: str) -> _PduGuard:
        return _PduGuard(self.limits.max_pdu_size, MAX_ACSE_PDU, peer)

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        assert self.socket is not None
        if self.limits.shared_listener:
            # Every process wakes for a new connection; a busy one lets the idler ones
            # reach ``accept`` first (least connections, roughly): without this delay the
            # first process took 3 of W4's 4 associations in about one run out of four.
            busy = len(self._open_connections)
            if busy:
                time.sleep(min(SHARED_ACCEPT_DELAY_MAX_S, SHARED_ACCEPT_DELAY_S * busy))
        conn, address = self.socket.accept()
        peer = f"{address[0]}:{address[1]}"
        sock = _GuardedSocket(conn.family, conn.type, conn.proto, fileno=conn.detach())
        # Responses go out at once (no Nagle delay on the node's side either).
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        _quickack(sock)
        sock.settimeout(min(self.limits.acse_timeout, self.limits.network_timeout))
        if self.ssl_context is None:
            sock.pdu_guard = self._guard(peer)
            self._opened(sock)
            return sock, address
        # The handshake is done later, in the connection's own thread.
        wrapped = self.ssl_context.wrap_socket(
            sock, server_side=True, do_handshake_on_connect=False
        )
        self._opened(wrapped)
        return wrapped, address

    def _opened(self, request: Any) -> None:
        with self._count_lock:
            self._open_connections.add(id(request))

    def _finished(self, request: Any) -> None:
        with self._count_lock:
            self._open_connections.discard(id(request))

    def shutdown_request(self, request: Any) -> None:
        """A refused or failed connection (served ones end in process_request_thread)."""
        self._finished(request)
        super().shutdown_request(request)

    def verify_request(self, request: Any, client_address: Any) -> bool:
        with self._count_lock:
            busy = len(self.active_associations) + self._handshakes
        if busy >= self.limits.max_connections:
            log.warning(
                "connection from %s refused: %d connections open (limit %d)",
                _address(client_address),
                busy,
                self.limits.max_connections,
            )
            return False
        return True

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            self._serve_connection(request, client_address)
        finally:
            self._finished(request)

    def _serve_connection(self, request: Any, client_address: Any) -> None:
        if isinstance(request, ssl.SSLSocket):
            with self._count_lock:
                self._handshakes += 1
            try:
                ok = self._handshake(request, _address(client_address))
            finally:
                with self._count_lock:
                    self._handshakes -= 1
            if not ok:
                self.shutdown_request(request)
                return
        super().process_request_thread(request, client_address)

    def _handshake(self, sock: ssl.SSLSocket, peer: str) -> bool:
        """TLS handshake within ``acse_timeout`` (PS3.15 B.9); logs a failure with the peer."""
        sock.settimeout(self.limits.acse_timeout)
        try:
            sock.do_handshake()
        except (OSError, ValueError) as exc:
            reason = "timed out" if isinstance(exc, TimeoutError) else str(exc)
            log.warning("TLS handshake with %s failed: %s", peer, reason[:300])
            return False
        if isinstance(sock, _GuardedSSLSocket):
            sock.pdu_guard = self._guard(peer)
        sock.settimeout(min(self.limits.acse_timeout, self.limits.network_timeout))
        log.info("TLS with %s: %s", peer, tls_mod.describe(sock))
        return True


def _address(client_address: Any) -> str:
    try:
        return f"{client_address[0]}:{client_address[1]}"
    except (TypeError, IndexError):
        return str(client_address)


def start_listener(
    ae: AE, cfg: Config, evt_handlers: Sequence[EventHandlerType], listen_fd: int | None = None
) -> GuardedAssociationServer:
    """``AE.start_server(block=False)`` with :class:`GuardedAssociationServer` on
    ``[node] host``/``port`` (TLS with ``[tls]``), serving on a daemon thread.

    Same steps as pynetdicom's ``start_server`` (ae.py): make the server, serve it
    on a daemon thread, register it with the AE (its ``shutdown`` unregisters it).
    ``listen_fd``: an extra receiving process's inherited listening socket.
    Raises :class:`~scp.config.ConfigError` on unusable TLS files, ``OSError`` when
    the port cannot be bound.
    """
    node = cfg.node
    ssl_context = tls_mod.server_context(cfg.tls, cfg.base_dir) if cfg.tls.enabled else None
    server = ae.make_server(
        (node.host, node.port),
        ssl_context=ssl_context,
        evt_handlers=list(evt_handlers),
        server_class=GuardedAssociationServer,
        limits=Limits(
            acse_timeout=node.acse_timeout,
            network_timeout=node.network_timeout,
            max_pdu_size=node.max_pdu_size,
            max_connections=2 * node.max_associations + 2,
            shared_listener=node.receiving_processes > 1,
            listen_fd=listen_fd,
            event_reactor=node.reactor == "event",
        ),
    )
    thread = threading.Thread(target=server.serve_forever, name="AcceptorServer", daemon=True)
    thread.start()
    compat.register_server(ae, server)
    if ssl_context is not None:
        log.info("DICOM TLS on (PS3.15 B.9 BCP 195 profile, TLS 1.2+)")
    return cast(GuardedAssociationServer, server)
