"""Who may associate with the node, and a listener that survives hostile peers.

Association acceptance (``[security]``), answered with the A-ASSOCIATE-RJ of
PS3.8 9.3.4 (result / source / reason-diag):

* ``allowed_calling_ae_titles`` (empty: anyone) and ``require_called_ae_title``
  are pynetdicom's own checks (``AE.require_calling_aet``, ``AE.require_called_aet``,
  applied in ``acse._negotiate_as_acceptor``): rejected-permanent (1), DICOM UL
  service-user (1), reason 3 *calling-AE-title-not-recognized* or reason 7
  *called-AE-title-not-recognized*.
* ``calling_ae_hosts`` pins a calling AE title to peer addresses (IPs or CIDR
  networks).  pynetdicom has no hook for it inside the negotiation, but its
  acceptor reactor checks, right after ``EVT_REQUESTED``, whether a handler of that
  event rejected the association (``association.py`` ``run_reactor``: "User used
  EVT_REQUESTED to send an A-ABORT or A-ASSOCIATE-RJ"): :meth:`AssociationPolicy.
  on_requested` rejects there, as pynetdicom itself does (``send_reject``, then
  ``EVT_REJECTED``, then ``kill``), with 1 / 1 / 3: the title is not recognized
  *from that address* (as dcmtk's dcmqrscp answers a host mismatch).
* More associations than ``node.max_associations`` get pynetdicom's transient (2),
  service-provider presentation (3), reason 2 *local-limit-exceeded*.

Every rejection is logged with the peer address (``scp.net.handlers.Handlers.on_rejected``).

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
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import socket
import ssl
import struct
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pynetdicom import AE, evt
from pynetdicom.transport import ThreadedAssociationServer

from scp.config import Config, ConfigError, SecurityConfig
from scp.net import reactor
from scp.net import tls as tls_mod

log = logging.getLogger("spacing_scp.security")

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: A-ASSOCIATE-RJ values (PS3.8 9.3.4, table 9-21).
RESULT_PERMANENT = 1
RESULT_TRANSIENT = 2
SOURCE_SERVICE_USER = 1
SOURCE_SERVICE_PROVIDER_ACSE = 2
SOURCE_SERVICE_PROVIDER_PRESENTATION = 3
REASON_NO_REASON = 1
REASON_CALLING_AE_NOT_RECOGNIZED = 3
REASON_CALLING_AE_NOT_RECOGNIZED_TEXT = "calling-AE-title-not-recognized"
REASON_CALLED_AE_NOT_RECOGNIZED = 7
REASON_LOCAL_LIMIT_EXCEEDED = 2

_RESULTS = {1: "rejected-permanent", 2: "rejected-transient"}
_SOURCES = {
    1: "DICOM UL service-user",
    2: "DICOM UL service-provider (ACSE)",
    3: "DICOM UL service-provider (presentation)",
}
_REASONS = {
    (1, 1): "no-reason-given",
    (1, 2): "application-context-name-not-supported",
    (1, 3): "calling-AE-title-not-recognized",
    (1, 7): "called-AE-title-not-recognized",
    (2, 1): "no-reason-given",
    (2, 2): "protocol-version-not-supported",
    (3, 1): "temporary-congestion",
    (3, 2): "local-limit-exceeded",
}

#: Largest PDU other than P-DATA-TF accepted (A-ASSOCIATE-RQ with 128 presentation
#: contexts of 30 transfer syntaxes each stays far below it).
MAX_ACSE_PDU = 1024 * 1024
_P_DATA_TF = 0x04


def describe_rejection(result: int, source: int, reason: int) -> str:
    """``rejected-permanent, DICOM UL service-user, calling-AE-title-not-recognized``."""
    return ", ".join(
        (
            _RESULTS.get(result, f"result {result}"),
            _SOURCES.get(source, f"source {source}"),
            _REASONS.get((source, reason), f"reason {reason}"),
        )
    )


def _peer_ip(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped  # a dual-stack listener sees ::ffff:10.0.0.5
    return ip


def parse_networks(pins: Mapping[str, list[str]]) -> dict[str, tuple[IPNetwork, ...]]:
    """``calling_ae_hosts`` as networks; raises ConfigError naming a bad entry."""
    out: dict[str, tuple[IPNetwork, ...]] = {}
    for title, hosts in pins.items():
        if not title.strip() or len(title.strip()) > 16:
            raise ConfigError(f"security.calling_ae_hosts: {title!r} is not an AE title")
        if not hosts:
            raise ConfigError(f"security.calling_ae_hosts.{title}: at least one address")
        nets = []
        for host in hosts:
            try:
                nets.append(ipaddress.ip_network(host.strip(), strict=False))
            except ValueError:
                raise ConfigError(
                    f"security.calling_ae_hosts.{title}: {host!r} is not an IP address "
                    "or a network (CIDR, e.g. 10.1.2.0/24)"
                ) from None
        out[title.strip()] = tuple(nets)
    return out


@dataclass(frozen=True)
class Rejection:
    """An A-ASSOCIATE-RJ to send (PS3.8 9.3.4) and why."""

    result: int
    source: int
    reason: int
    why: str


class AssociationPolicy:
    """The ``[security]`` section, applied to an AE and its association requests."""

    def __init__(self, security: SecurityConfig, ae_title: str) -> None:
        self.ae_title = ae_title.strip()
        self.allowed = tuple(t.strip() for t in security.allowed_calling_ae_titles if t.strip())
        for title in self.allowed:
            if len(title) > 16 or "\\" in title:
                raise ConfigError(f"security.allowed_calling_ae_titles: {title!r} is not an AE")
        self.require_called = security.require_called_ae_title
        self.pins = parse_networks(security.calling_ae_hosts)
        if self.allowed:
            unknown = sorted(set(self.pins) - set(self.allowed))
            if unknown:
                raise ConfigError(
                    f"security.calling_ae_hosts.{unknown[0]}: not in "
                    "security.allowed_calling_ae_titles (it could never associate)"
                )

    @classmethod
    def from_config(cls, cfg: Config) -> AssociationPolicy:
        return cls(cfg.security, cfg.node.ae_title)

    # -- the rules, as pure functions (unit tests, and the log) ------------------------------
    def check(self, calling: str, called: str, peer_address: str) -> Rejection | None:
        """The rejection the node answers this request with, or ``None`` to go on.

        The first two rules are enforced by pynetdicom (see :meth:`apply`); they are
        repeated here so that the whole policy can be read and tested in one place.
        """
        calling, called = calling.strip(), called.strip()
        if self.allowed and calling not in self.allowed:
            return Rejection(
                RESULT_PERMANENT,
                SOURCE_SERVICE_USER,
                REASON_CALLING_AE_NOT_RECOGNIZED,
                f"calling AE title {calling!r} is not in security.allowed_calling_ae_titles",
            )
        if self.require_called and called != self.ae_title:
            return Rejection(
                RESULT_PERMANENT,
                SOURCE_SERVICE_USER,
                REASON_CALLED_AE_NOT_RECOGNIZED,
                f"called AE title {called!r} is not the node's {self.ae_title!r}",
            )
        return self.check_host(calling, peer_address)

    def check_host(self, calling: str, peer_address: str) -> Rejection | None:
        """Host pinning: a pinned calling AE title only from its addresses."""
        nets = self.pins.get(calling.strip())
        if nets is None:
            return None
        ip = _peer_ip(peer_address)
        if ip is not None and any(ip.version == n.version and ip in n for n in nets):
            return None
        return Rejection(
            RESULT_PERMANENT,
            SOURCE_SERVICE_USER,
            REASON_CALLING_AE_NOT_RECOGNIZED,
            f"calling AE title {calling.strip()!r} is pinned to "
            f"{', '.join(map(str, nets))}; the request came from {peer_address}",
        )

    # -- pynetdicom ------------------------------------------------------------------------
    def apply(self, ae: AE) -> None:
        """pynetdicom's own checks: reasons 3 and 7 of PS3.8 9.3.4."""
        ae.require_calling_aet = list(self.allowed)
        ae.require_called_aet = self.require_called

    def bindings(self) -> list[tuple[Any, Any]]:
        return [
            (evt.EVT_REQUESTED, self.on_requested),
            (evt.EVT_ACCEPTED, self.on_accepted),
            (evt.EVT_CONN_CLOSE, discard_partial_dataset),
        ]

    def on_requested(self, event: Any) -> None:
        """``EVT_REQUESTED``: reject a pinned calling AE from another host."""
        assoc = event.assoc
        primitive = assoc.requestor.primitive
        calling = _text(getattr(primitive, "calling_ae_title", ""))
        peer = assoc.requestor.address_info.address
        rejection = self.check_host(calling, str(peer))
        if rejection is None:
            return
        log.info("association request refused: %s", rejection.why)
        # What pynetdicom's ACSE does for its own rejections (acse.py).
        assoc.acse.send_reject(rejection.result, rejection.source, rejection.reason)
        evt.trigger(assoc, evt.EVT_REJECTED, {})
        assoc.kill()

    def on_accepted(self, event: Any) -> None:
        """From now on a silent peer is judged by ``network_timeout`` (not ACSE's)."""
        sock = getattr(getattr(event.assoc.dul, "socket", None), "socket", None)
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.settimeout(event.assoc.network_timeout)


def discard_partial_dataset(event: Any) -> None:
    """``EVT_CONN_CLOSE``: remove the file of a data set whose transfer never finished.

    pynetdicom writes a data set received in fragments to a temporary file (in the
    store's ``tmp/``, :func:`scp.node.configure_pynetdicom`) and deletes it after the
    C-STORE handler ran; a message cut short by an A-ABORT or a dropped connection
    stays in ``assoc.dimse.message`` and its file would stay until the next start-up.
    A complete message is never there (the DIMSE provider hands it on and resets it).
    """
    message = getattr(getattr(event.assoc, "dimse", None), "message", None)
    handle = getattr(message, "_data_set_file", None)
    if handle is None:
        return
    with contextlib.suppress(OSError):
        handle.close()
    with contextlib.suppress(OSError):
        os.unlink(handle.name)
        log.info("discarded a data set cut short by the peer (%s)", os.path.basename(handle.name))


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        value = value.decode("ascii", errors="replace")
    return str(value or "").strip()


# -- the listener ------------------------------------------------------------------------------


class PduLengthError(OSError):
    """A peer announced a PDU longer than the node accepts."""


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
        if limits.event_reactor and reactor.supported():
            kwargs.setdefault("request_handler", reactor.EventDrivenRequestHandler)
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
