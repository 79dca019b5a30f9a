"""pynetdicom event handlers: C-ECHO, C-STORE, and association logging.

The C-STORE handler only maps the event to :class:`scp.services.ingest.Received` and the
:class:`scp.services.ingest.Outcome` to a DIMSE status (PS3.4 B.2.3); the work is in
:mod:`scp.services.ingest`.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
import weakref
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import evt

from scp import status
from scp.metrics import METRICS
from scp.net import compat
from scp.net.policy import describe_rejection
from scp.services.find import (
    PATIENT_ROOT_SOP_CLASS_UID,
    SOP_CLASS_UID,
    CFindRequest,
    FindResponse,
    FindService,
    Model,
)
from scp.services.ingest import Ingestor, Received, stored_file_meta

log = logging.getLogger("spacing_scp.association")
inst_log = logging.getLogger("spacing_scp.instance")


#: The Query/Retrieve SOP classes whose extended negotiation the node answers (PS3.4 C.6).
QUERY_RETRIEVE_SOP_CLASSES = frozenset(
    {
        SOP_CLASS_UID,
        PATIENT_ROOT_SOP_CLASS_UID,
        "1.2.840.10008.5.1.4.1.2.1.2",  # Patient Root - MOVE
        "1.2.840.10008.5.1.4.1.2.1.3",  # Patient Root - GET
        "1.2.840.10008.5.1.4.1.2.2.2",  # Study Root - MOVE
        "1.2.840.10008.5.1.4.1.2.2.3",  # Study Root - GET
    }
)


@dataclass
class AssociationStats:
    started: float = field(default_factory=time.monotonic)
    stored: int = 0
    warnings: int = 0
    failed: int = 0
    resends: int = 0
    bytes: int = 0
    echoes: int = 0
    end: str = "closed"
    #: SOP classes whose relational queries/retrievals the requester negotiated
    #: (SOP Class Extended Negotiation, PS3.4 C.5.1.1).
    relational: set[str] = field(default_factory=set)


def _ae(value: Any) -> str:
    if isinstance(value, bytes):
        value = value.decode("ascii", errors="replace")
    return str(value or "").strip()


def _called(assoc: Any) -> str:
    """The called AE title the peer put in its A-ASSOCIATE-RQ (PS3.8 9.3.2), which is not
    the node's own when ``require_called_ae_title`` is off or the request was rejected."""
    primitive = getattr(assoc.requestor, "primitive", None)
    called = _ae(getattr(primitive, "called_ae_title", ""))
    return called or _ae(assoc.acceptor.ae_title)


def _peer(assoc: Any) -> str:
    info = assoc.requestor.address_info
    return f"{info.address}:{info.port}"


def received_file_meta(
    assoc: Any, sop_class_uid: str, sop_instance_uid: str, transfer_syntax_uid: str
) -> bytes:
    """The File Meta Information written while a C-STORE data set arrives
    (:func:`scp.net.compat.write_received_file_meta`): the stored file's, so that the
    ingest renames the received file into place instead of copying it."""
    return stored_file_meta(
        sop_class_uid,
        sop_instance_uid,
        transfer_syntax_uid,
        _ae(assoc.requestor.ae_title),
        _ae(assoc.acceptor.ae_title),
    )


class Handlers:
    """Binds one :class:`Ingestor` to pynetdicom events."""

    def __init__(self, ingestor: Ingestor, find: FindService | None = None) -> None:
        self.ingestor = ingestor
        #: The C-FIND SCP (:mod:`scp.services.find`); the node sets it once its queries exist.
        self.find = find
        self._stats: weakref.WeakKeyDictionary[Any, AssociationStats] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    def stats(self, assoc: Any) -> AssociationStats:
        with self._lock:
            st = self._stats.get(assoc)
            if st is None:
                st = self._stats[assoc] = AssociationStats()
            return st

    def bindings(self) -> list[tuple[Any, Any]]:
        return [
            (evt.EVT_CONN_OPEN, self.on_conn_open),
            (evt.EVT_C_ECHO, self.on_echo),
            (evt.EVT_C_STORE, self.on_store),
            (evt.EVT_C_FIND, self.on_find),
            (evt.EVT_SOP_EXTENDED, self.on_sop_extended),
            (evt.EVT_ACCEPTED, self.on_accepted),
            (evt.EVT_REJECTED, self.on_rejected),
            (evt.EVT_RELEASED, self.on_released),
            (evt.EVT_ABORTED, self.on_aborted),
            (evt.EVT_CONN_CLOSE, self.on_conn_close),
        ]

    # -- events ------------------------------------------------------------------------------
    def on_conn_open(self, event: Any) -> None:
        self.stats(event.assoc)
        sock = getattr(getattr(event.assoc.dul, "socket", None), "socket", None)
        if sock is not None:
            # dcmtk-style senders write a header then a body per message; without
            # TCP_NODELAY each would wait for a delayed ACK (performance-notes.md).
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def on_echo(self, event: Any) -> int:
        self.stats(event.assoc).echoes += 1
        return status.SUCCESS

    def on_store(self, event: Any) -> Dataset:
        assoc = event.assoc
        req = event.request
        rcv = Received(
            path=Path(event.dataset_path),
            sop_class_uid=str(req.AffectedSOPClassUID or ""),
            sop_instance_uid=str(req.AffectedSOPInstanceUID or ""),
            calling_ae_title=_ae(assoc.requestor.ae_title),
            called_ae_title=_called(assoc),
            peer_address=_peer(assoc),
            receive_error=compat.receive_error(event.dataset_path),
        )
        try:
            size = rcv.path.stat().st_size
        except OSError:
            size = 0
        try:
            outcome = self.ingestor.ingest(rcv)
        except Exception as exc:  # never let an exception become a silent abort
            inst_log.exception("C-STORE %s failed", rcv.sop_instance_uid)
            rsp = Dataset()
            rsp.Status = status.PROCESSING_FAILURE
            rsp.ErrorComment = status.error_comment("internal error", exc)
            METRICS.inc(
                "spacing_scp_instances_received_total",
                status=f"0x{status.PROCESSING_FAILURE:04X}",
            )
            self.stats(assoc).failed += 1
            return rsp
        METRICS.inc("spacing_scp_instances_received_total", status=f"0x{outcome.status:04X}")
        METRICS.observe_ms("spacing_scp_store_seconds", outcome.milliseconds)
        if outcome.result is not None and outcome.stored:
            for finding in outcome.result.findings:
                METRICS.inc(
                    "spacing_scp_findings_total", code=finding.code, severity=finding.severity
                )
        st = self.stats(assoc)
        if outcome.stored:
            METRICS.inc(
                "spacing_scp_stored_files_total", how="renamed" if outcome.renamed else "written"
            )
            st.stored += 1
            st.bytes += size
            st.resends += int(outcome.resend)
            st.warnings += int(outcome.status != status.SUCCESS)
        else:
            st.failed += 1
        verdict = outcome.result.verdict if outcome.result is not None else "-"
        codes = ",".join(outcome.result.codes) if outcome.result is not None else ""
        inst_log.log(
            logging.INFO if outcome.stored else logging.WARNING,
            "C-STORE sop=%s status=0x%04X (%s) ms=%.1f bytes=%d from=%s%s spacing=%s%s%s",
            outcome.sop_instance_uid,
            outcome.status,
            status.describe(outcome.status),
            outcome.milliseconds,
            size,
            rcv.calling_ae_title,
            " resend" if outcome.resend else "",
            verdict,
            f" codes={codes}" if codes else "",
            f" comment={outcome.comment!r}" if outcome.comment else "",
        )
        rsp = Dataset()
        rsp.Status = outcome.status
        if outcome.comment:
            # Error Comment (0000,0902) is LO: 64 characters at most (PS3.7 C.4.2.1.4).
            rsp.ErrorComment = outcome.comment.replace("\\", "/")[:64]
        return rsp

    def on_find(self, event: Any) -> Iterator[FindResponse]:
        """C-FIND, Study Root and Patient Root (PS3.4 C.4.1, C.6.1, C.6.2): answered by
        :class:`scp.services.find.FindService`."""
        if self.find is None:
            yield status.FIND_ERROR_UNABLE_TO_PROCESS, None
            return
        sop_class = str(event.context.abstract_syntax)
        model: Model = "PATIENT" if sop_class == PATIENT_ROOT_SOP_CLASS_UID else "STUDY"
        negotiated = sop_class in self.stats(event.assoc).relational
        request = CFindRequest(
            calling_ae_title=_ae(event.assoc.requestor.ae_title),
            identifier=lambda: event.identifier,
            is_cancelled=lambda: bool(event.is_cancelled),
        )
        yield from self.find.handle(request, model, negotiated)

    def on_sop_extended(self, event: Any) -> dict[str, bytes]:
        """SOP Class Extended Negotiation (PS3.4 C.5.1.1, C.5.2.1, C.5.3.1): relational
        queries and retrievals are offered to whoever asks (byte 1 = 1); the other
        options (combined date-time, fuzzy PN, time zones) are not (0)."""
        answer: dict[str, bytes] = {}
        relational = self.stats(event.assoc).relational
        for uid, info in (event.app_info or {}).items():
            if str(uid) not in QUERY_RETRIEVE_SOP_CLASSES or not info:
                continue
            asked = bytes(info)
            if asked[0] == 1:
                relational.add(str(uid))
            answer[str(uid)] = bytes([asked[0] & 1]) + bytes(len(asked) - 1)
        return answer

    def on_accepted(self, event: Any) -> None:
        assoc = event.assoc
        contexts = ", ".join(
            f"{cx.abstract_syntax.name}/{cx.transfer_syntax[0].name}"
            for cx in assoc.accepted_contexts
        )
        log.info(
            "association accepted peer=%s calling=%s called=%s contexts=%d [%s]",
            _peer(assoc),
            _ae(assoc.requestor.ae_title),
            _called(assoc),
            len(assoc.accepted_contexts),
            contexts[:2000],
        )

    def on_rejected(self, event: Any) -> None:
        """Every A-ASSOCIATE-RJ, with the peer address and the PS3.8 9.3.4 reason."""
        assoc = event.assoc
        self.stats(assoc).end = "rejected"
        rj = assoc.acceptor.primitive
        result, source, reason = (
            getattr(rj, k, None) for k in ("result", "result_source", "diagnostic")
        )
        rq = assoc.requestor.primitive
        log.warning(
            "association rejected peer=%s calling=%s called=%s: %s (result=%s source=%s reason=%s)",
            _peer(assoc),
            _ae(getattr(rq, "calling_ae_title", "")),
            _called(assoc),
            describe_rejection(int(result or 0), int(source or 0), int(reason or 0)),
            result,
            source,
            reason,
        )

    def on_released(self, event: Any) -> None:
        self.stats(event.assoc).end = "released"

    def on_aborted(self, event: Any) -> None:
        self.stats(event.assoc).end = "aborted"

    def on_conn_close(self, event: Any) -> None:
        assoc = event.assoc
        st = self.stats(assoc)
        METRICS.inc("spacing_scp_associations_total", end=st.end)
        log.info(
            "association %s peer=%s calling=%s called=%s duration=%.2fs stored=%d "
            "warnings=%d failed=%d resends=%d echoes=%d bytes=%d",
            st.end,
            _peer(assoc),
            _ae(assoc.requestor.ae_title),
            _called(assoc),
            time.monotonic() - st.started,
            st.stored,
            st.warnings,
            st.failed,
            st.resends,
            st.echoes,
            st.bytes,
        )
