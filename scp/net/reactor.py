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
pynetdicom 3.0.4's, with only the sleep replaced, and ``EVT_RELEASED`` triggered before
the A-RELEASE-RP is sent rather than after (so that the peer's close, seen on the DUL
thread, finds the association released); the state machine, PDU decoding, DIMSE and
every other event hook are unchanged. It is wired in through pynetdicom's documented
extension point, the ``request_handler`` of the association server
(:class:`EventDrivenRequestHandler`). The same change, applied inside pynetdicom, is the
upstream-able patch described in ``bench/README.md``.

Every pynetdicom private name the loops use goes through :mod:`scp.net.compat`, and the
node uses these classes only where :func:`scp.net.compat.supported` (the locked
pynetdicom range): elsewhere it runs the stock classes, so an upgrade cannot silently run
copied loop bodies against a different state machine.
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

from pynetdicom import evt
from pynetdicom.association import Association
from pynetdicom.pdu import A_ABORT_RQ
from pynetdicom.transport import AssociationSocket

from scp.net import compat

#: The loops below log what pynetdicom's log, under pynetdicom's logger names (the node
#: keeps pynetdicom's loggers at WARNING and writes its own association lines).
log = logging.getLogger("pynetdicom.association")
#: The one line the node writes when it aborts an association on input it cannot decode.
abort_log = logging.getLogger("spacing_scp.association")


class _OurLineInstead(logging.Filter):
    """Drops pynetdicom's state machine traceback (``fsm.py``, ``LOGGER.exception``) when
    it comes from an :class:`EventDrivenDUL` thread, which logs one line of its own."""

    def filter(self, record: logging.LogRecord) -> bool:
        ours = isinstance(threading.current_thread(), EventDrivenDUL)
        return not (ours and record.levelno >= logging.ERROR)


logging.getLogger("pynetdicom.fsm").addFilter(_OurLineInstead())

#: Longest wait, in seconds, before the loops look at pynetdicom's timers again.
IDLE_WAIT = 0.05


class _NotifyingQueue(queue.Queue[Any]):
    """A FIFO queue that calls ``notify`` after every ``put``."""

    def __init__(self, notify: Callable[[], None]) -> None:
        super().__init__()
        self._notify = notify

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        super().put(item, block, timeout)
        self._notify()


class EventDrivenDUL(compat.DULHook):
    """pynetdicom's DUL service provider, waking on socket data or new work."""

    def __init__(self, assoc: EventDrivenAssociation) -> None:
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        # Guards the pipe's descriptors: once closed, their numbers may be reused by any
        # file or socket of the process, which a late wake() must never write to.
        self._pipe_lock = threading.Lock()
        self._pipe_open = True
        super().__init__(assoc)
        self.to_provider_queue = _NotifyingQueue(self.wake)
        self.to_user_queue = _NotifyingQueue(assoc.wake)

    def on_stop(self) -> None:
        """pynetdicom asks the thread to end (``kill_dul``, ``stop_dul``, the loop itself):
        wake it so that it sees the request at once."""
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
            time.sleep(compat.run_loop_delay(self))
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
        idle_timer = compat.idle_timer(self)
        dul_ready = compat.dul_ready(self.assoc)
        idle_timer.start()
        self.socket = cast(AssociationSocket, self.socket)
        sleep = False

        while True:
            if not dul_ready.is_set():
                dul_ready.set()
                sleep = True

            if sleep:
                self._wait()

            if self.stop_requested:
                break

            if self.artim_timer.expired:
                self.event_queue.put("Evt18")

            try:
                if compat.process_recv_primitive(self):
                    pass
                elif compat.is_transport_event(self):
                    idle_timer.restart()
            except Exception as exc:
                self._abort_on(exc, "receiving")
                return

            try:
                event = self.event_queue.get(block=False)
            except queue.Empty:
                sleep = True
                continue

            try:
                self.state_machine.do_action(event)
            except Exception as exc:
                # pynetdicom 3.0.4 lets this end the thread uncaught (a command set of
                # garbage, a P-DATA on a context that was not accepted: ``'Dataset' object
                # has no attribute 'CommandField'``): abort, and say so in one line.
                self._abort_on(exc, f"state machine event {event}")
                return
            sleep = False

    def _abort_on(self, exc: Exception, where: str) -> None:
        """One WARNING line naming the peer and the error, then :meth:`_abort`."""
        peer = self.assoc.requestor.address_info
        abort_log.warning(
            "aborting the association with %s: input it cannot decode (%s, %s: %s)",
            "?" if peer is None else f"{peer.address}:{peer.port}",
            where,
            type(exc).__name__,
            exc,
        )
        self._abort()

    def _abort(self) -> None:
        """Send an A-ABORT (service-provider, reason not specified: PS3.8 9.3.8) and end
        the association and this thread."""
        abort_pdu = A_ABORT_RQ()
        abort_pdu.source = 0x02
        abort_pdu.reason_diagnostic = 0x00
        if self.socket is not None:
            with contextlib.suppress(OSError):
                self.socket.send(abort_pdu.encode())
        self.assoc.is_aborted = True
        self.assoc.is_established = False
        compat.kill_association(self.assoc)
        self.request_stop()


class EventDrivenAssociation(compat.AssociationHook):
    """pynetdicom's acceptor association, its reactor waking on DIMSE/ACSE input."""

    def __init__(self, ae: Any, mode: str) -> None:
        self._wake_event = threading.Event()
        super().__init__(ae, mode)
        self.dul = EventDrivenDUL(self)
        # pynetdicom's setters copy these onto the DUL's ARTIM and idle timers
        # (association.py): apply them again to the replacement DUL.
        self.acse_timeout = self.acse_timeout
        self.network_timeout = self.network_timeout
        self.dimse.msg_queue = _NotifyingQueue(self.wake)

    def on_kill(self) -> None:
        """pynetdicom asks the loop to end (``kill()``, the DUL's error path): wake it."""
        self.wake()

    def wake(self) -> None:
        """Make the reactor's current or next wait return at once."""
        self._wake_event.set()

    def _has_input(self) -> bool:
        return bool(self.dimse.msg_queue.queue) or bool(self.dul.to_user_queue.queue)

    def run_acceptor_reactor(self) -> None:
        """pynetdicom 3.0.4's ``Association._run_reactor`` (acceptor), waiting on
        :attr:`_wake_event` where it slept 1 ms before each pass."""
        compat.reactor_running(self)
        while not self.kill_requested:
            if not self._has_input():
                self._wake_event.wait(IDLE_WAIT)
            self._wake_event.clear()

            compat.reactor_checkpoint(self)

            context_id, msg = self.dimse.get_msg(block=False)
            if msg:
                compat.serve_request(self, msg, cast(int, context_id))

            if self.is_established and self.acse.is_release_requested():
                # Released before the A-RELEASE-RP goes out (pynetdicom: after): the peer
                # closes the connection as soon as it has the RP, and EVT_CONN_CLOSE (on
                # the DUL thread) must find the association released, not just "closed".
                self.is_released = True
                self.is_established = False
                evt.trigger(self, evt.EVT_RELEASED, {})
                self.acse.send_release(is_response=True)
                log.info("Association Released")
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
                    with compat.reactor_paused(self):
                        self.release()
                else:
                    self.abort()

                self.kill()
                return


class EventDrivenRequestHandler(compat.RequestHandlerHook):
    """pynetdicom's request handler, creating :class:`EventDrivenAssociation` acceptors.

    :meth:`create_association` is pynetdicom 3.0.4's ``RequestHandler._create_association``
    (transport.py) with the class swapped (:attr:`association_class`).
    """

    association_class: type[EventDrivenAssociation] = EventDrivenAssociation

    def create_association(self) -> Association:
        assoc = self.association_class(self.ae, compat.MODE_ACCEPTOR)
        compat.set_association_server(assoc, self.server)

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

        compat.bind_server_handlers(assoc, self.server)
        return assoc
