"""C-MOVE and C-GET SCP handlers (PS3.4 C.4.2, C.4.3) over :mod:`scp.services.retrieve`.

pynetdicom's Query/Retrieve service classes run the sub-operations: they send each data
set a handler yields as a C-STORE -- on the requester's own association for C-GET (the
requester took the Storage SCP role, SCP/SCU Role Selection, PS3.7 D.3.3.4), on a new
association to the Move Destination for C-MOVE -- and answer pending responses with the
Number of Remaining/Completed/Failed/Warning Sub-operations, the final status (0x0000,
0xB000 with the Failed SOP Instance UID List) and Cancel (0xFE00).

A handler yields a :class:`PendingInstance` per stored instance: a stand-in data set that
:func:`scp.net.compat.resolve_stored_sends` turns into the stored file's path when the
C-STORE goes out, so the file is streamed from disk (memory flat) in its stored transfer
syntax, or into a re-encoded data set when the peer accepted only another one
(:func:`scp.services.retrieve.what_to_send`).

Statuses of its own: 0xA801 (Move Destination not in ``[[move_destinations]]``), 0xA900
(identifier), 0xA701 (more than 65535 instances), 0xC000 (an internal error).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import build_context, evt

from scp import status
from scp.config import Peer
from scp.metrics import METRICS
from scp.services.find.keys import Model
from scp.services.retrieve import (
    RetrieveError,
    RetrieveService,
    StoredInstance,
    proposed_contexts,
    what_to_send,
)

log = logging.getLogger("spacing_scp.retrieve")

#: Patient Root MOVE and GET (PS3.4 C.6.1); every other retrieve SOP class is Study Root.
PATIENT_ROOT_RETRIEVE = frozenset({"1.2.840.10008.5.1.4.1.2.1.2", "1.2.840.10008.5.1.4.1.2.1.3"})


class PendingInstance(Dataset):
    """A stored instance as a C-GET/C-MOVE handler yields it: SOP Class and SOP Instance
    UID only (pynetdicom lists the latter when the sub-operation fails); the file is
    read when the C-STORE goes out (:meth:`resolve_for`)."""

    def __init__(self, instance: StoredInstance) -> None:
        super().__init__()
        self.SOPClassUID = instance.sop_class_uid
        self.SOPInstanceUID = instance.sop_instance_uid
        self.stored = instance

    def resolve_for(self, assoc: Any) -> Path | Dataset:
        """What goes out over ``assoc``: the file path, or a data set to re-encode."""
        accepted = [
            str(cx.transfer_syntax[0])
            for cx in assoc.accepted_contexts
            if str(cx.abstract_syntax) == self.stored.sop_class_uid
        ]
        return what_to_send(self.stored, accepted)


def _model(event: Any) -> Model:
    return "PATIENT" if str(event.context.abstract_syntax) in PATIENT_ROOT_RETRIEVE else "STUDY"


def _ae(value: Any) -> str:
    if isinstance(value, bytes):
        value = value.decode("ascii", errors="replace")
    return str(value or "").strip()


class RetrieveHandlers:
    """Binds a :class:`RetrieveService` and the ``[[move_destinations]]`` to pynetdicom."""

    def __init__(self, service: RetrieveService, move_destinations: list[Peer]) -> None:
        self.service = service
        self.destinations = {p.ae_title.strip(): p for p in move_destinations}

    def bindings(self) -> list[tuple[Any, Any]]:
        return [(evt.EVT_C_GET, self.on_get), (evt.EVT_C_MOVE, self.on_move)]

    def _resolve(self, event: Any) -> list[StoredInstance]:
        try:
            identifier = event.identifier
        except Exception:
            raise RetrieveError(
                status.FIND_ERROR_UNABLE_TO_PROCESS, "identifier cannot be decoded"
            ) from None
        try:
            return self.service.instances(identifier, _model(event))
        except RetrieveError:
            raise
        except Exception as exc:
            log.exception("retrieve failed")
            raise RetrieveError(
                status.FIND_ERROR_UNABLE_TO_PROCESS, f"internal error: {type(exc).__name__}"
            ) from None

    def _send(self, event: Any, instances: list[StoredInstance]) -> Iterator[Any]:
        """The sub-operations: one pending stand-in per instance, Cancel honoured."""
        yield len(instances)
        for instance in instances:
            if event.is_cancelled:
                yield status.FIND_CANCEL, None
                return
            yield status.FIND_PENDING, PendingInstance(instance)

    def on_get(self, event: Any) -> Iterator[Any]:
        """C-GET (PS3.4 C.4.3): the instances go back on the requester's association."""
        started = time.monotonic()
        calling = _ae(event.assoc.requestor.ae_title)
        try:
            instances = self._resolve(event)
        except RetrieveError as err:
            log.info("C-GET from %s refused: %s", calling, err.comment)
            METRICS.inc("spacing_scp_retrieve_total", op="get", status=f"0x{err.code:04X}")
            yield 1
            yield err.status_dataset(), None
            return
        log.info("C-GET from %s: %d instances", calling, len(instances))
        yield from self._send(event, instances)
        METRICS.inc("spacing_scp_retrieve_total", op="get", status="done")
        log.info("C-GET from %s done ms=%.1f", calling, (time.monotonic() - started) * 1000)

    def on_move(self, event: Any) -> Iterator[Any]:
        """C-MOVE (PS3.4 C.4.2): the instances go to a configured Move Destination."""
        started = time.monotonic()
        calling = _ae(event.assoc.requestor.ae_title)
        title = _ae(event.move_destination)
        peer = self.destinations.get(title)
        if peer is None:
            log.warning("C-MOVE from %s: unknown Move Destination %r (0xA801)", calling, title)
            METRICS.inc(
                "spacing_scp_retrieve_total",
                op="move",
                status=f"0x{status.RETRIEVE_REFUSED_MOVE_DESTINATION_UNKNOWN:04X}",
            )
            yield None, None
            return
        try:
            instances = self._resolve(event)
        except RetrieveError as err:
            log.info("C-MOVE from %s refused: %s", calling, err.comment)
            METRICS.inc("spacing_scp_retrieve_total", op="move", status=f"0x{err.code:04X}")
            # pynetdicom only answers a failure once the destination is associated.
            yield peer.host, peer.port, {"contexts": [build_context("1.2.840.10008.1.1")]}
            yield 1
            yield err.status_dataset(), None
            return
        contexts = [build_context(sop, syntaxes) for sop, syntaxes in proposed_contexts(instances)]
        yield peer.host, peer.port, {"contexts": contexts or [build_context("1.2.840.10008.1.1")]}
        log.info(
            "C-MOVE from %s to %s@%s:%d: %d instances",
            calling,
            title,
            peer.host,
            peer.port,
            len(instances),
        )
        yield from self._send(event, instances)
        METRICS.inc("spacing_scp_retrieve_total", op="move", status="done")
        log.info("C-MOVE from %s done ms=%.1f", calling, (time.monotonic() - started) * 1000)
