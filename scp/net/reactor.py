"""Event-driven reactors for pynetdicom acceptor associations (issue 7).

pynetdicom 3.0 runs two polling loops per association: the DUL thread
(``dul.py`` ``DULServiceProvider.run_reactor``) sleeps ``_run_loop_delay`` (1 ms)
whenever it found nothing to do, and the association thread
(``association.py`` ``Association._run_reactor``) sleeps 1 ms before every look at its
DIMSE message queue. A C-STORE request/response round trip crosses both loops about
three times, so every instance waits ~3 ms in ``time.sleep`` however fast the rest is:
a bare pynetdicom receiver tops out near 310 small instances/s here (pynetdicom's own
source carries ``# TODO: try and make this event based``).

This module makes both loops wait for the thing they are waiting *for* instead:

* :class:`EventDrivenDUL` blocks in ``select`` on the association's socket and a wake-up
  pipe. Everything that gives the DUL thread work (a primitive put on
  ``to_provider_queue``, a request to stop) writes a byte to the pipe.
* :class:`EventDrivenAssociation` blocks on a :class:`threading.Event` that is set when
  a DIMSE message is complete (``dimse.msg_queue``), when the DUL passes a primitive up
  (``to_user_queue``: A-RELEASE, A-ABORT) and when the DUL thread ends.

Both waits still time out (:data:`IDLE_WAIT` seconds) so that pynetdicom's timers
(ARTIM, the network idle timeout) are checked as before. The loop bodies are
pynetdicom 3.0.4's, with only the sleep replaced; the state machine, PDU decoding, DIMSE
and every event hook are unchanged. It is wired in through pynetdicom's documented
extension point, the ``request_handler`` of the association server
(:class:`EventDrivenRequestHandler`). The same change, applied inside pynetdicom, is the
upstream-able patch described in ``bench/README.md``.

:func:`supported` is false for other pynetdicom versions, and the node then uses the
stock classes, so an upgrade cannot silently run copied loop bodies against a different
state machine.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import select
import ssl
import threading
import time
from collections.abc import Callable
from copy import deepcopy
from datetime import datetime
from typing import Any, cast

import pynetdicom
from pynetdicom import evt
from pynetdicom._globals import MODE_ACCEPTOR
from pynetdicom.association import Association
from pynetdicom.dul import DULServiceProvider
from pynetdicom.pdu import A_ABORT_RQ
from pynetdicom.transport import AssociationSocket, RequestHandler

#: The loops below log what pynetdicom's log, under pynetdicom's logger names (the node
#: keeps pynetdicom's loggers at WARNING and writes its own association lines).
log = logging.getLogger("pynetdicom.association")
dul_log = logging.getLogger("pynetdicom.dul")

#: Longest wait, in seconds, before the loops look at pynetdicom's timers again.
IDLE_WAIT = 0.05

#: The pynetdicom releases whose loop bodies this module reproduces.
SUPPORTED_VERSIONS = ("3.0.",)


def supported() -> bool:
    """Whether the installed pynetdicom is one whose reactors this module replaces."""
    return pynetdicom.__version__.startswith(SUPPORTED_VERSIONS)


class _NotifyingQueue(queue.Queue[Any]):
    """A FIFO queue that calls ``notify`` after every ``put``."""

    def __init__(self, notify: Callable[[], None]) -> None:
        super().__init__()
        self._notify = notify

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        super().put(item, block, timeout)
        self._notify()


class EventDrivenDUL(DULServiceProvider):
    """pynetdicom's DUL service provider, waking on socket data or new work."""

    def __init__(self, assoc: EventDrivenAssociation) -> None:
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        # Guards the pipe's descriptors: once closed, their numbers may be reused by any
        # file or socket of the process, which a late wake() must never write to.
        self._pipe_lock = threading.Lock()
        self._pipe_open = True
        self._dul_stopping = False
        super().__init__(assoc)
        self.to_provider_queue = _NotifyingQueue(self.wake)
        self.to_user_queue = _NotifyingQueue(assoc.wake)

    # pynetdicom stops the thread by assigning ``_kill_thread`` (``kill_dul``,
    # ``stop_dul``, the reactor itself): a property lets the assignment wake it.
    @property
    def _kill_thread(self) -> bool:
        return self._dul_stopping

    @_kill_thread.setter
    def _kill_thread(self, value: bool) -> None:
        self._dul_stopping = value
        if value:
            self.wake()

    def wake(self) -> None:
        """Make the reactor's current or next wait return at once."""
        with self._pipe_lock:
            if self._pipe_open:
                with contextlib.suppress(BlockingIOError):  # pipe full: already awake
                    os.write(self._wake_w, b"\0")

    def _wait(self) -> None:
        """Block until the socket is readable, new work is queued, or :data:`IDLE_WAIT`."""
        assoc_socket = self.socket
        sock = assoc_socket.socket if assoc_socket is not None else None
        if isinstance(sock, ssl.SSLSocket) and sock.pending():
            return  # decrypted bytes already buffered: select would not see them
        watched: list[Any] = [self._wake_r]
        if sock is not None and sock.fileno() >= 0:
            watched.append(sock)
        try:
            ready, _, _ = select.select(watched, [], [], IDLE_WAIT)
        except (OSError, ValueError):  # the socket closed under us
            time.sleep(self._run_loop_delay)
            return
        if self._wake_r in ready:
            with contextlib.suppress(OSError):
                os.read(self._wake_r, 4096)

    def run_reactor(self) -> None:
        """pynetdicom 3.0.4's ``DULServiceProvider.run_reactor``, waiting with
        :meth:`_wait` where it slept ``_run_loop_delay``."""
        try:
            self._run_reactor_loop()
        finally:
            self.assoc_wake()
            with self._pipe_lock:
                self._pipe_open = False
                os.close(self._wake_r)
                os.close(self._wake_w)

    def assoc_wake(self) -> None:
        cast(EventDrivenAssociation, self.assoc).wake()

    def _run_reactor_loop(self) -> None:
        self._idle_timer.start()
        self.socket = cast(AssociationSocket, self.socket)
        sleep = False

        while True:
            if not self.assoc._dul_ready.is_set():
                self.assoc._dul_ready.set()
                sleep = True

            if sleep:
                self._wait()

            if self._kill_thread:
                break

            if self.artim_timer.expired:
                self.event_queue.put("Evt18")

            try:
                if self._process_recv_primitive():
                    pass
                elif self._is_transport_event():
                    self._idle_timer.restart()
            except Exception as exc:
                dul_log.error("Exception in DUL.run(), aborting association")
                dul_log.exception(exc)
                abort_pdu = A_ABORT_RQ()
                abort_pdu.source = 0x02
                abort_pdu.reason_diagnostic = 0x00
                self.socket.send(abort_pdu.encode())
                self.assoc.is_aborted = True
                self.assoc.is_established = False
                self.assoc._kill = True
                self._kill_thread = True
                return

            try:
                event = self.event_queue.get(block=False)
            except queue.Empty:
                sleep = True
                continue

            self.state_machine.do_action(event)
            sleep = False


class EventDrivenAssociation(Association):
    """pynetdicom's acceptor association, its reactor waking on DIMSE/ACSE input."""

    def __init__(self, ae: Any, mode: str) -> None:
        self._wake_event = threading.Event()
        self._killed = False
        super().__init__(ae, mode)
        self.dul = EventDrivenDUL(self)
        # pynetdicom's setters copy these onto the DUL's ARTIM and idle timers
        # (association.py): apply them again to the replacement DUL.
        self.acse_timeout = self.acse_timeout
        self.network_timeout = self.network_timeout
        self.dimse.msg_queue = _NotifyingQueue(self.wake)

    @property
    def _kill(self) -> bool:
        return self._killed

    @_kill.setter
    def _kill(self, value: bool) -> None:
        self._killed = value
        if value:
            self.wake()

    def wake(self) -> None:
        """Make the reactor's current or next wait return at once."""
        self._wake_event.set()

    def _has_input(self) -> bool:
        return bool(self.dimse.msg_queue.queue) or bool(self.dul.to_user_queue.queue)

    def _run_reactor(self) -> None:
        """pynetdicom 3.0.4's ``Association._run_reactor`` (acceptor), waiting on
        :attr:`_wake_event` where it slept 1 ms before each pass."""
        self._is_paused = False
        while not self._kill:
            if not self._has_input():
                self._wake_event.wait(IDLE_WAIT)
            self._wake_event.clear()

            self._is_paused = True
            self._reactor_checkpoint.wait()
            self._is_paused = False

            context_id, msg = self.dimse.get_msg(block=False)
            if msg:
                self._serve_request(msg, cast(int, context_id))

            if self.is_established and self.acse.is_release_requested():
                self.acse.send_release(is_response=True)
                log.info("Association Released")
                self.is_released = True
                self.is_established = False
                evt.trigger(self, evt.EVT_RELEASED, {})
                self.kill()
                return

            if self.acse.is_aborted():
                log_msg = "Association Aborted"
                if self.acse.is_aborted("a-p-abort"):
                    log_msg += " (A-P-ABORT)"
                log.info(log_msg)
                self.dul.receive_pdu(wait=False)
                self.is_aborted = True
                self.is_established = False
                evt.trigger(self, evt.EVT_ABORTED, {})
                self.kill()
                return

            if not self.dul.is_alive():
                self.kill()
                return

            if self.dul.idle_timer_expired():
                log.error("Network timeout reached")
                if self.network_timeout_response == "A-RELEASE":
                    self._is_paused = True
                    self._reactor_checkpoint.wait()
                    self.release()
                    self._is_paused = False
                else:
                    self.abort()

                self.kill()
                return


class EventDrivenRequestHandler(RequestHandler):
    """pynetdicom's request handler, creating :class:`EventDrivenAssociation` acceptors.

    ``_create_association`` is pynetdicom 3.0.4's (transport.py) with the class swapped.
    """

    def _create_association(self) -> Association:
        assoc = EventDrivenAssociation(self.ae, MODE_ACCEPTOR)
        assoc._server = self.server

        timestamp = datetime.strftime(datetime.now(), "%Y%m%d%H%M%S")
        assoc.name = f"AcceptorThread@{timestamp}"

        sock = AssociationSocket(assoc, client_socket=self.request)
        assoc.set_socket(sock)

        assoc.acceptor.maximum_length = self.ae.maximum_pdu_size
        assoc.acceptor.ae_title = self.server.ae_title
        assoc.acceptor.address_info = self.local
        assoc.acceptor.implementation_class_uid = self.ae.implementation_class_uid
        assoc.acceptor.implementation_version_name = self.ae.implementation_version_name
        assoc.acceptor.supported_contexts = deepcopy(self.server.contexts)

        assoc.requestor.address_info = self.remote

        for event in self.server._handlers:
            if event.is_intervention and self.server._handlers[event]:
                assoc.bind(event, *self.server._handlers[event])
            elif isinstance(event, evt.NotificationEvent):
                for handler in self.server._handlers[event]:
                    handler = cast(evt._HandlerBase, handler)
                    assoc.bind(event, handler[0], handler[1])

        return assoc
