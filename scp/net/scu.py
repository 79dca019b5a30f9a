"""The forwarding workers' Storage SCU (PS3.4 B.2) on pynetdicom.

:class:`StorageSCU` implements :class:`scp.services.forwarding.sender.AssociationOpener`:
one per destination, a fresh pynetdicom AE per association (so that :meth:`StorageSCU.
abort` reaches exactly the association of that destination, also while it is being
negotiated). Instances go out from their files: the stored data set bytes streamed as
they are (pynetdicom's chunked send), or decoded and re-encoded by pydicom when the
destination accepted only another uncompressed little-endian transfer syntax.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pynetdicom import AE, build_context, evt
from pynetdicom.association import Association

from scp.net import compat
from scp.services.forwarding.sender import (
    AcceptedContext,
    AssociationSettings,
    ContextProposal,
    RejectedContext,
    StoreResponse,
)

log = logging.getLogger("spacing_scp.forward")


#: Nice value of a thread that sends to destinations (and of the association threads it
#: starts, which inherit it): a modality waiting for its C-STORE-RSP wins the CPU over a
#: PACS that can wait (issue 14); every job is still sent, only later under load.
FORWARD_NICE = 10


def yield_cpu() -> None:
    """Lower the calling thread's CPU priority to :data:`FORWARD_NICE` (Linux
    ``setpriority`` on the thread id; elsewhere, or without permission, nothing)."""
    with contextlib.suppress(OSError, AttributeError):
        tid = threading.get_native_id()
        if os.getpriority(os.PRIO_PROCESS, tid) < FORWARD_NICE:
            os.setpriority(os.PRIO_PROCESS, tid, FORWARD_NICE)


class StoreSCUAssociation:
    """A pynetdicom requestor association (a :class:`~scp.services.forwarding.sender.
    StoreAssociation`)."""

    def __init__(self, assoc: Association, settings: AssociationSettings, connected: bool) -> None:
        self._association = assoc
        self._settings = settings
        self._connected = connected
        self.accepted_contexts: Sequence[AcceptedContext] = [
            AcceptedContext(str(cx.abstract_syntax), str(cx.transfer_syntax[0]))
            for cx in assoc.accepted_contexts
        ]
        self.rejected_contexts: Sequence[RejectedContext] = [
            RejectedContext(str(cx.abstract_syntax), int(cx.result or 0))
            for cx in assoc.rejected_contexts
        ]

    @property
    def is_established(self) -> bool:
        return bool(self._association.is_established)

    @property
    def failure(self) -> str:
        """Why there is no association (PS3.8 9.3.4 for a rejection); ``""`` if there is."""
        if self._association.is_established:
            return ""
        s = self._settings
        where = f"{s.called_ae_title}@{s.host}:{s.port}"
        if not self._connected:
            return f"no association with {where}: TCP connection failed or timed out"
        if self._association.is_rejected:
            rj: Any = getattr(self._association.acceptor, "primitive", None)
            detail = ""
            with contextlib.suppress(Exception):
                detail = f" ({rj.result_str}, {rj.source_str}: {rj.reason_str}; PS3.8 9.3.4)"
            return f"association rejected by {where}{detail}"
        if self._association.is_aborted:
            return f"association with {where} aborted during negotiation"
        return f"no answer from {where} to the association request (ACSE timeout)"

    def send_c_store(self, path: Path, *, reencode: bool) -> StoreResponse:
        if reencode:
            rsp = self._association.send_c_store(dcmread(path))
        else:
            compat.send_data_sets_from_files()
            rsp = self._association.send_c_store(path)
        code = getattr(rsp, "Status", None)
        comment = getattr(rsp, "ErrorComment", None)
        return StoreResponse(None if code is None else int(code), str(comment or ""))

    def release(self) -> None:
        self._association.release()


class StorageSCU:
    """One destination's associations (an :class:`~scp.services.forwarding.sender.
    AssociationOpener`); ``StorageSCU`` itself is the ``OpenerFactory``."""

    def __init__(self, settings: AssociationSettings) -> None:
        self.settings = settings
        self._ae: AE | None = None

    def _new_ae(self) -> AE:
        s = self.settings
        ae = AE(ae_title=s.calling_ae_title)
        ae.acse_timeout = s.acse_timeout_s
        ae.dimse_timeout = s.dimse_timeout_s
        ae.network_timeout = s.network_timeout_s
        ae.connection_timeout = s.connect_timeout_s
        ae.maximum_pdu_size = s.max_pdu
        return ae

    def open(self, contexts: Sequence[ContextProposal]) -> StoreSCUAssociation:
        yield_cpu()
        ae = self._ae = self._new_ae()
        connected: list[bool] = []

        def on_open(event: Any) -> None:
            connected.append(True)
            sock = getattr(getattr(event.assoc.dul, "socket", None), "socket", None)
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        assoc = ae.associate(
            self.settings.host,
            self.settings.port,
            contexts=[
                build_context(cx.abstract_syntax, list(cx.transfer_syntax)) for cx in contexts
            ],
            ae_title=self.settings.called_ae_title,
            max_pdu=self.settings.max_pdu,
            evt_handlers=[(evt.EVT_CONN_OPEN, on_open)],
        )
        return StoreSCUAssociation(assoc, self.settings, bool(connected))

    def abort(self) -> bool:
        ae = self._ae
        if ae is None:
            return False
        aborted = False
        for assoc in list(ae.active_associations):
            assoc.abort()
            # A C-STORE waiting for its response is not woken by a local abort: hand it
            # "no response", as pynetdicom's own aborts do.
            compat.wake_waiting_response(assoc)
            aborted = True
        return aborted
