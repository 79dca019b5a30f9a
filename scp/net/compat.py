"""Every use the node makes of pynetdicom's private names, behind one version check.

pynetdicom's public API has no way to do a few things the node needs (register a
server it made itself, replace the polling reactors, clean up after a transfer cut
short, reject an association from ``EVT_REQUESTED``...). Each such access is a small
named function here or, where the node must override a private method or flag, a hook
base class that gives it a public name (the part used while a data set arrives lives in
:mod:`scp.net.compat_receive`, re-exported here). No other module of ``scp/`` (nor
``bench/``) touches a pynetdicom name that starts with ``_``. ``tests/test_compat.py`` holds one
contract test per access, run against the installed pynetdicom: a release that renames
one or changes what the node relies on fails a named test (``test_<function>``) instead
of silently changing the node's behaviour.

**The version check.** :func:`supported` is true for the range locked in
``pyproject.toml`` (:data:`REQUIREMENT`, the releases the contract tests pass on).
Outside it:

* the event-driven reactors (:mod:`scp.net.reactor`, built on :class:`DULHook`,
  :class:`AssociationHook`, :class:`RequestHandlerHook` and the reactor internals below)
  are not used: pynetdicom's own reactors run (:mod:`scp.net.server`);
* :func:`partial_dataset_file` answers ``None`` (a data set file left by a transfer cut
  short is then removed at the next start-up, with the rest of the store's ``tmp/``);
* :func:`write_received_file_meta` and :func:`remember_valid_uids` change nothing: the
  received file keeps pynetdicom's File Meta (the ingest then writes the stored file
  instead of renaming the received one) and every UID is validated as pynetdicom does.

The other accesses have no fallback and are made on every version: the switches of
``pynetdicom._config`` (the configuration module pynetdicom's user guide documents),
:func:`register_server` (a server's ``shutdown`` needs it), and two uses of public names
with undocumented behaviour, :func:`reject_association` and :func:`wake_waiting_response`.

=================================  ===============================================
function / class                   pynetdicom name (3.0.4)
=================================  ===============================================
:func:`receive_data_sets_to_files` ``_config.STORE_RECV_CHUNKED_DATASET``
:func:`send_data_sets_from_files`  ``_config.STORE_SEND_CHUNKED_DATASET``
:func:`resolve_stored_sends`       ``Association.send_c_store`` as the Q/R service
                                   classes call it for C-GET/C-MOVE sub-operations
:func:`bound_send_queue`           ``DULServiceProvider.send_pdu``,
                                   ``.to_provider_queue`` (a ``queue.Queue``)
:func:`cap_send_pdu`               ``DIMSEServiceProvider.maximum_pdu_size`` as
                                   ``send_msg`` fragments a message with it
:func:`accept_unknown_storage`     ``_config.UNRESTRICTED_STORAGE_SERVICE``
:func:`write_received_file_meta`   ``dimse_messages.create_file_meta``,
                                   ``dimse_messages.write_file_meta_info`` as
                                   ``DIMSEMessage.decode_msg`` calls them
:func:`remember_valid_uids`        ``dimse_primitives.set_uid``
:func:`hold_back_write_errors`     ``dimse_messages.NamedTemporaryFile`` and how
                                   ``decode_msg`` and the Storage SCP use its file
:data:`MODE_ACCEPTOR`              ``_globals.MODE_ACCEPTOR``
:func:`register_server`            ``AE._servers``
:func:`set_association_server`     ``Association._server``
:func:`bind_server_handlers`       ``AssociationServer._handlers``, ``evt._HandlerBase``
:class:`RequestHandlerHook`        ``RequestHandler._create_association``
:class:`AssociationHook`           ``Association._kill``, ``Association._run_reactor``
:class:`DULHook`                   ``DULServiceProvider._kill_thread``
:func:`dul_ready`                  ``Association._dul_ready``
:func:`idle_timer`                 ``DULServiceProvider._idle_timer``
:func:`run_loop_delay`             ``DULServiceProvider._run_loop_delay``
:func:`process_recv_primitive`     ``DULServiceProvider._process_recv_primitive``
:func:`is_transport_event`         ``DULServiceProvider._is_transport_event``
:func:`kill_association`           ``Association._kill`` (set from the DUL thread)
:func:`reactor_running`            ``Association._is_paused``
:func:`reactor_paused`             ``Association._is_paused``, ``._reactor_checkpoint``
:func:`reactor_checkpoint`         ``Association._is_paused``, ``._reactor_checkpoint``
:func:`serve_request`              ``Association._serve_request``
:func:`partial_dataset_file`       ``DIMSEMessage._data_set_file``
:func:`reject_association`         ``ACSE.send_reject`` + ``EVT_REJECTED`` + ``kill``
:func:`wake_waiting_response`      ``DIMSEServiceProvider.msg_queue``
=================================  ===============================================
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Iterator
from typing import IO, Any, cast

import pynetdicom
from pydicom.dataset import Dataset
from pynetdicom import _config, _globals, evt
from pynetdicom.ae import ApplicationEntity
from pynetdicom.association import Association
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dul import DULServiceProvider
from pynetdicom.pdu_primitives import P_DATA
from pynetdicom.timer import Timer
from pynetdicom.transport import AssociationServer, RequestHandler, ThreadedAssociationServer

#: The pynetdicom releases the accesses below are written for and contract-tested on:
#: the dependency as locked in ``pyproject.toml``.
REQUIREMENT = "pynetdicom>=3.0.4,<3.1"
MINIMUM_VERSION: tuple[int, ...] = (3, 0, 4)
BELOW_VERSION: tuple[int, ...] = (3, 1)

_RELEASE = re.compile(r"(\d+(?:\.\d+)*)")


def release(version: str) -> tuple[int, ...] | None:
    """``"3.0.4"`` -> ``(3, 0, 4)``; pre-release suffixes are ignored, ``None`` if no number."""
    match = _RELEASE.match(version.strip())
    if match is None:
        return None
    return tuple(int(part) for part in match.group(1).split("."))


def supported(version: str | None = None) -> bool:
    """Whether pynetdicom ``version`` (default: the installed one) is in :data:`REQUIREMENT`.

    Read at each call (it is cheap), so a test may patch ``pynetdicom.__version__``.
    """
    number = release(pynetdicom.__version__ if version is None else version)
    return number is not None and MINIMUM_VERSION <= number < BELOW_VERSION


# -- pynetdicom._config: process-wide switches -------------------------------------------------


def receive_data_sets_to_files() -> None:
    """A received C-STORE data set is written to a temporary file as its P-DATA fragments
    arrive (PS3.8 9.3.5), in :func:`tempfile.gettempdir`, and the ``EVT_C_STORE`` handler
    gets ``event.dataset_path`` instead of a decoded data set."""
    _config.STORE_RECV_CHUNKED_DATASET = True


def send_data_sets_from_files() -> None:
    """``Association.send_c_store(path)`` streams the data set of a Part 10 file as it is
    encoded in the file (no decode, no re-encode), in fragments."""
    _config.STORE_SEND_CHUNKED_DATASET = True


def resolve_stored_sends() -> None:
    """Let a C-GET/C-MOVE handler yield a stand-in for a stored file.

    pynetdicom's Query/Retrieve service classes accept only a ``Dataset`` from the
    handler and pass it to ``Association.send_c_store``, which streams from disk only
    when given a path.  After this call (idempotent, process-wide), ``send_c_store``
    called with a data set that has a ``resolve_for(assoc)`` method sends what that
    method returns instead: the stored file's path (streamed, see
    :func:`send_data_sets_from_files`) or a re-encodable data set.  Any other argument
    is passed on untouched.
    """
    current = Association.send_c_store
    if getattr(current, "_resolves_stored", False):
        return

    def send_c_store(self: Association, dataset: Any, *args: Any, **kwargs: Any) -> Any:
        resolve = getattr(dataset, "resolve_for", None) if isinstance(dataset, Dataset) else None
        if callable(resolve):
            dataset = resolve(self)
        return current(self, dataset, *args, **kwargs)

    send_c_store._resolves_stored = True  # type: ignore[attr-defined]
    Association.send_c_store = send_c_store  # type: ignore[method-assign]


#: P-DATA PDUs a sending thread may queue ahead of the DUL thread (see bound_send_queue).
SEND_QUEUE_PDUS = 16
_send_limit = SEND_QUEUE_PDUS


def bound_send_queue(limit: int = SEND_QUEUE_PDUS) -> None:
    """Backpressure for data sets sent from files.

    pynetdicom's DIMSE layer reads a data set file one PDU at a time but puts every
    P-DATA PDU in the DUL's unbounded ``to_provider_queue`` at once: reading a disk is
    faster than the network, so a large instance sent by path (C-GET, C-MOVE, forwarding)
    would sit in memory whole.  After this call (idempotent, process-wide), a thread
    other than the DUL's own that queues a P-DATA PDU waits while ``limit`` are already
    queued (until the DUL thread takes one, or ends).  A later call only changes the
    limit.
    """
    global _send_limit
    _send_limit = limit
    current = DULServiceProvider.send_pdu
    if getattr(current, "_bounded", False):
        return

    def send_pdu(self: DULServiceProvider, primitive: Any) -> None:
        if isinstance(primitive, P_DATA) and threading.current_thread() is not self:
            pending = self.to_provider_queue
            with pending.not_full:
                while len(pending.queue) >= _send_limit and self.is_alive():
                    pending.not_full.wait(0.05)
        current(self, primitive)

    send_pdu._bounded = True  # type: ignore[attr-defined]
    DULServiceProvider.send_pdu = send_pdu  # type: ignore[method-assign]


#: Largest P-DATA PDU the node sends to a peer that announced no limit (0), bytes.
SEND_PDU_CAP = 1024 * 1024
_send_pdu_cap = SEND_PDU_CAP


def cap_send_pdu(cap: int = SEND_PDU_CAP) -> None:
    """A peer whose Maximum Length is 0 (no limit, PS3.8 D.1) would get each data set in
    one PDU, built in memory whole; after this call (idempotent, process-wide) the node
    sends it PDUs of at most ``cap`` bytes (smaller PDUs are always allowed).  A later
    call only changes the cap."""
    global _send_pdu_cap
    _send_pdu_cap = cap
    current = cast(property, DIMSEServiceProvider.__dict__["maximum_pdu_size"])
    getter = current.fget
    if getter is None or getattr(getter, "_capped", False):
        return

    def maximum_pdu_size(self: DIMSEServiceProvider) -> int:
        size = int(getter(self))
        return size if size > 0 else _send_pdu_cap

    maximum_pdu_size._capped = True  # type: ignore[attr-defined]
    DIMSEServiceProvider.maximum_pdu_size = property(maximum_pdu_size)  # type: ignore[method-assign,assignment]


def accept_unknown_storage(enabled: bool) -> None:
    """With ``enabled``, storage SOP classes pynetdicom does not know are accepted too
    (a C-STORE-RQ on any accepted context goes to the ``EVT_C_STORE`` handler)."""
    _config.UNRESTRICTED_STORAGE_SERVICE = enabled


# -- received data sets (scp/net/compat_receive.py) ------------------------------------------

from scp.net.compat_receive import (  # noqa: E402  (after the version check it uses)
    VALID_UIDS_KEPT,
    FileMetaWriter,
    hold_back_write_errors,
    receive_error,
    remember_valid_uids,
    write_received_file_meta,
)

__all__ = [
    "VALID_UIDS_KEPT",
    "FileMetaWriter",
    "hold_back_write_errors",
    "receive_error",
    "remember_valid_uids",
    "write_received_file_meta",
]

# -- the AE, its servers and their acceptors ---------------------------------------------------

#: ``Association(ae, MODE_ACCEPTOR)``: the local AE is the association acceptor.
MODE_ACCEPTOR: str = _globals.MODE_ACCEPTOR


def register_server(ae: ApplicationEntity, server: ThreadedAssociationServer) -> None:
    """Register a server made with ``AE.make_server`` as ``AE.start_server`` does: ``AE.
    shutdown`` stops it, and the server's own ``shutdown`` expects to be registered (it
    removes itself, ``ValueError`` otherwise)."""
    ae._servers.append(server)


def set_association_server(assoc: Association, server: AssociationServer) -> None:
    """The acceptor's server: pynetdicom closes the request through it
    (``server.shutdown_request``) when the association ends."""
    assoc._server = server


def bind_server_handlers(assoc: Association, server: AssociationServer) -> None:
    """Bind the server's event handlers (``evt_handlers`` of ``make_server``, and any bound
    later) to a new acceptor, as pynetdicom's ``RequestHandler._create_association``."""
    for event in server._handlers:
        if event.is_intervention and server._handlers[event]:
            assoc.bind(event, *server._handlers[event])
        elif isinstance(event, evt.NotificationEvent):
            for handler in server._handlers[event]:
                handler = cast(evt._HandlerBase, handler)
                assoc.bind(event, handler[0], handler[1])


class RequestHandlerHook(RequestHandler):
    """pynetdicom's request handler; the private factory of the acceptor association
    (``_create_association``) is :meth:`create_association`."""

    def _create_association(self) -> Association:
        return self.create_association()

    def create_association(self) -> Association:
        """The acceptor :class:`Association` for this connection (override to change it)."""
        return super()._create_association()


class AssociationHook(Association):
    """pynetdicom's association; its private stop flag (``_kill``, set by ``kill()`` and
    by the DUL thread) is :attr:`kill_requested` with the :meth:`on_kill` callback, and its
    acceptor loop (``_run_reactor``) is :meth:`run_acceptor_reactor`."""

    _kill_requested = False

    @property
    def _kill(self) -> bool:
        return self._kill_requested

    @_kill.setter
    def _kill(self, value: bool) -> None:
        self._kill_requested = value
        if value:
            self.on_kill()

    @property
    def kill_requested(self) -> bool:
        """Whether the association's reactor was asked to end."""
        return self._kill_requested

    def on_kill(self) -> None:
        """Called (in the asking thread) when the reactor is asked to end."""

    def _run_reactor(self) -> None:
        self.run_acceptor_reactor()

    def run_acceptor_reactor(self) -> None:
        """The acceptor's loop once established (pynetdicom's; override to change it)."""
        super()._run_reactor()


class DULHook(DULServiceProvider):
    """pynetdicom's DICOM Upper Layer provider; its private stop flag (``_kill_thread``,
    set by ``kill_dul``, ``stop_dul`` and its own loop) is :attr:`stop_requested` with the
    :meth:`on_stop` callback."""

    _stop_requested = False

    @property
    def _kill_thread(self) -> bool:
        return self._stop_requested

    @_kill_thread.setter
    def _kill_thread(self, value: bool) -> None:
        self._stop_requested = value
        if value:
            self.on_stop()

    @property
    def stop_requested(self) -> bool:
        """Whether the DUL thread was asked to end."""
        return self._stop_requested

    def request_stop(self) -> None:
        """Ask the DUL thread to end (what ``kill_dul`` does)."""
        self._kill_thread = True

    def on_stop(self) -> None:
        """Called (in the asking thread) when the DUL thread is asked to end."""


# -- the reactor loops' internals (scp.net.reactor) --------------------------------------------


def dul_ready(assoc: Association) -> threading.Event:
    """Set by the DUL thread's first pass; the association waits on it before negotiating."""
    return assoc._dul_ready


def idle_timer(dul: DULServiceProvider) -> Timer:
    """The network idle timer (``network_timeout`` seconds), restarted on each PDU read."""
    return dul._idle_timer


def run_loop_delay(dul: DULServiceProvider) -> float:
    """Seconds pynetdicom's DUL loop sleeps when it found nothing to do."""
    return float(dul._run_loop_delay)


def process_recv_primitive(dul: DULServiceProvider) -> bool:
    """Turn the next primitive the local user queued into a state machine event; ``True``
    if there was one (it stays queued for the state machine's action to take)."""
    return bool(dul._process_recv_primitive())


def is_transport_event(dul: DULServiceProvider) -> bool:
    """Read one PDU if the socket has data (or close it in Sta13); ``True`` if an event was
    queued (the caller restarts the idle timer)."""
    return bool(dul._is_transport_event())


def kill_association(assoc: Association) -> None:
    """Hard stop of the association's reactor (the DUL's error path; no ``kill()``)."""
    assoc._kill = True


def reactor_running(assoc: Association) -> None:
    """The acceptor loop starts: not paused (``send_*`` calls wait for a pause)."""
    assoc._is_paused = False


@contextlib.contextmanager
def reactor_paused(assoc: Association) -> Iterator[None]:
    """Pause the acceptor loop at its checkpoint: mark it paused, wait until no ``send_*``
    call of the association holds the checkpoint, run the body, go on."""
    assoc._is_paused = True
    assoc._reactor_checkpoint.wait()
    try:
        yield
    finally:
        assoc._is_paused = False


def reactor_checkpoint(assoc: Association) -> None:
    """Let a ``send_*`` call of the association that holds the checkpoint finish first."""
    with reactor_paused(assoc):
        pass


def serve_request(assoc: Association, msg: Any, context_id: int) -> None:
    """Hand a received DIMSE request to its service class (the ``EVT_C_*`` handlers)."""
    assoc._serve_request(msg, context_id)


# -- received data sets ------------------------------------------------------------------------


def partial_dataset_file(assoc: Association) -> IO[bytes] | None:
    """The temporary file of a C-STORE data set still being received (only with
    :func:`receive_data_sets_to_files`), or ``None``: once a message is complete the DIMSE
    provider hands it on and forgets the file. ``None`` outside :func:`supported`."""
    if not supported():
        return None
    message = getattr(getattr(assoc, "dimse", None), "message", None)
    return cast("IO[bytes] | None", getattr(message, "_data_set_file", None))


# -- association control -----------------------------------------------------------------------


def reject_association(assoc: Association, result: int, source: int, reason: int) -> None:
    """From an ``EVT_REQUESTED`` handler: answer A-ASSOCIATE-RJ (PS3.8 9.3.4, table 9-21).

    What pynetdicom's ACSE does for its own rejections (``send_reject``, ``EVT_REJECTED``,
    ``kill``); its acceptor then skips the negotiation (``run_reactor``: "User used
    EVT_REQUESTED to send an A-ABORT or A-ASSOCIATE-RJ"). Raises ``ValueError`` for a
    combination table 9-21 does not have.
    """
    assoc.acse.send_reject(result, source, reason)
    evt.trigger(assoc, evt.EVT_REJECTED, {})
    assoc.kill()


def wake_waiting_response(assoc: Association) -> None:
    """After a local ``abort()``: a ``send_c_store`` waiting for its response returns at once
    with no status, as when the peer aborts (pynetdicom does not wake it for a local abort:
    it would wait out the DIMSE timeout)."""
    assoc.dimse.msg_queue.put((None, None))
