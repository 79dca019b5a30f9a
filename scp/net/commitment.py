"""Storage Commitment Push Model on pynetdicom (PS3.4 J): the N-ACTION handler and the
N-EVENT-REPORT sender (a :class:`scp.services.commitment.ReportSender`) of the node as
SCP; the N-ACTION sender and the N-EVENT-REPORT handler of the node as SCU towards its
``storage_commitment`` destinations (:mod:`scp.services.commitment_scu`).

The N-ACTION-RSP is sent once the request is a row in the index
(:meth:`scp.services.commitment.CommitmentService.accept`); when it has gone out
(``EVT_DIMSE_SENT``) the worker is woken.  A report goes out on the association the
request came on while it is open (no role negotiation needed, PS3.4 J.3.3), else on a new
association to the requester's ``[[commitment_peers]]`` entry, proposing SCP/SCU Role
Selection with the node as the Storage Commitment SCP (PS3.7 D.3.3.4, PS3.4 J.3.3).
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable, Sequence
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import AE, build_role, evt

from scp import status
from scp.config import Destination, Peer
from scp.services.commitment import (
    NO_SUCH_ACTION,
    PROCESSING_FAILURE,
    SOP_CLASS_UID,
    SOP_INSTANCE_UID,
    CommitmentRefused,
    CommitmentService,
    PendingReport,
    Report,
    action_information,
)

log = logging.getLogger("spacing_scp.commitment")

#: N-ACTION status: No such SOP Class (PS3.7 C.5).
NO_SUCH_SOP_CLASS = status.COMMITMENT_NO_SUCH_SOP_CLASS


def _ae(value: Any) -> str:
    if isinstance(value, bytes):
        value = value.decode("ascii", errors="replace")
    return str(value or "").strip()


def _status(code: int, comment: str | None = None) -> Dataset:
    ds = Dataset()
    ds.Status = code
    if comment:
        ds.ErrorComment = comment[:64]
    return ds


class CommitmentReportSender:
    """Sends N-EVENT-REPORTs: on the requesting association, else on a new one."""

    def __init__(
        self,
        ae_title: str,
        peers: list[Peer],
        *,
        timeout_s: float = 30.0,
        connect_timeout_s: float = 10.0,
    ) -> None:
        self.ae_title = ae_title
        self.peers = {p.ae_title.strip(): p for p in peers}
        self.timeout_s = timeout_s
        self.connect_timeout_s = connect_timeout_s
        self._open: dict[int, weakref.ref[Any]] = {}
        self._lock = threading.Lock()

    def remember(self, request_id: int, assoc: Any) -> None:
        """The association request ``request_id`` came on (used while it stays open)."""
        with self._lock:
            self._open = {k: v for k, v in self._open.items() if v() is not None}
            self._open[request_id] = weakref.ref(assoc)

    def send_report(self, pending: PendingReport) -> str | None:
        with self._lock:
            ref = self._open.pop(pending.id, None)
        assoc = ref() if ref is not None else None
        if assoc is not None and assoc.is_established:
            error = self._send(assoc, pending.report)
            if error is None:
                return None
            log.info("report id=%d on the open association failed (%s)", pending.id, error)
        peer = self.peers.get(pending.calling_ae_title)
        if peer is None:
            return f"no [[commitment_peers]] entry for AE {pending.calling_ae_title!r}"
        ae = AE(ae_title=self.ae_title)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = self.timeout_s
        ae.connection_timeout = self.connect_timeout_s
        ae.add_requested_context(SOP_CLASS_UID)
        role = build_role(SOP_CLASS_UID, scu_role=False, scp_role=True)
        new = ae.associate(peer.host, peer.port, ae_title=peer.ae_title, ext_neg=[role])
        where = f"{peer.ae_title}@{peer.host}:{peer.port}"
        if not new.is_established:
            return f"no association with {where} (refused, rejected or unreachable)"
        try:
            if not any(str(cx.abstract_syntax) == SOP_CLASS_UID for cx in new.accepted_contexts):
                return f"{where} did not accept the Storage Commitment context"
            return self._send(new, pending.report)
        finally:
            if new.is_established:
                new.release()

    def _send(self, assoc: Any, report: Report) -> str | None:
        try:
            rsp, _ = assoc.send_n_event_report(
                report.dataset(), report.event_type_id, SOP_CLASS_UID, SOP_INSTANCE_UID
            )
        except Exception as exc:
            return f"N-EVENT-REPORT not sent: {exc}"
        code = getattr(rsp, "Status", None)
        if code is None:
            return "no N-EVENT-REPORT response (timeout or association ended)"
        if int(code) != 0x0000:
            return f"N-EVENT-REPORT answered 0x{int(code):04X}"
        return None


def report_lists(info: Dataset | None) -> tuple[str, list[str], list[str]]:
    """Transaction UID, committed and failed SOP Instance UIDs of an N-EVENT-REPORT's
    Event Information (PS3.4 J.3.3.1.1)."""
    if info is None:
        return "", [], []
    committed = [
        str(i.get("ReferencedSOPInstanceUID", "")) for i in info.get("ReferencedSOPSequence", [])
    ]
    failed = [str(i.get("ReferencedSOPInstanceUID", "")) for i in info.get("FailedSOPSequence", [])]
    return str(info.get("TransactionUID", "")).strip("\x00 "), committed, failed


class CommitmentRequestSender:
    """The node as Storage Commitment SCU (a :class:`scp.services.commitment_scu.
    CommitmentRequester`): N-ACTION to a destination, then the association stays open up
    to ``wait_s`` seconds for the report (the destination may also send it later on a new
    association: :meth:`CommitmentHandlers.on_n_event_report`)."""

    def __init__(
        self,
        ae_title: str,
        on_report: Callable[[str, list[str], list[str]], object],
        *,
        timeout_s: float = 30.0,
        wait_s: float = 10.0,
    ) -> None:
        self.ae_title = ae_title
        self.on_report = on_report
        self.timeout_s = timeout_s
        self.wait_s = wait_s

    def request(
        self, destination: Destination, transaction_uid: str, refs: Sequence[tuple[str, str]]
    ) -> str | None:
        reported = threading.Event()

        def on_event(event: Any) -> tuple[int, None]:
            self.on_report(*report_lists(event.event_information))
            reported.set()
            return 0x0000, None

        ae = AE(ae_title=destination.calling_ae_title or self.ae_title)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = self.timeout_s
        ae.add_requested_context(SOP_CLASS_UID)
        assoc = ae.associate(
            destination.host,
            destination.port,
            ae_title=destination.ae_title,
            evt_handlers=[(evt.EVT_N_EVENT_REPORT, on_event)],
        )
        where = f"{destination.ae_title}@{destination.host}:{destination.port}"
        if not assoc.is_established:
            return f"no association with {where}"
        try:
            info = action_information(transaction_uid, refs)
            try:
                rsp, _ = assoc.send_n_action(info, 1, SOP_CLASS_UID, SOP_INSTANCE_UID)
            except Exception as exc:
                return f"N-ACTION not sent to {where}: {exc}"
            code = getattr(rsp, "Status", None)
            if code is None or int(code) != 0x0000:
                return f"N-ACTION to {where} answered {code if code is None else hex(code)}"
            reported.wait(self.wait_s)
            return None
        finally:
            if assoc.is_established:
                assoc.release()


class CommitmentHandlers:
    """Binds the N-ACTION handler; ``wake`` is called once an N-ACTION-RSP is out."""

    def __init__(
        self,
        service: CommitmentService,
        sender: CommitmentReportSender,
        wake: Callable[[], None],
        on_report: Callable[[str, list[str], list[str]], int] | None = None,
    ) -> None:
        """``on_report``: records a destination's N-EVENT-REPORT
        (:meth:`scp.services.commitment_scu.DestinationCommitment.on_report`)."""
        self.service = service
        self.sender = sender
        self.wake = wake
        self.on_report = on_report

    def bindings(self) -> list[tuple[Any, Any]]:
        return [
            (evt.EVT_N_ACTION, self.on_n_action),
            (evt.EVT_N_EVENT_REPORT, self.on_n_event_report),
            (evt.EVT_DIMSE_SENT, self.on_dimse_sent),
        ]

    def on_n_event_report(self, event: Any) -> tuple[int, None]:
        """A destination's Storage Commitment report on an association it opened (the
        node accepts the SCU role there, PS3.4 J.3.3)."""
        if self.on_report is None or str(event.request.AffectedSOPClassUID) != SOP_CLASS_UID:
            return NO_SUCH_SOP_CLASS, None
        try:
            transaction, committed, failed = report_lists(event.event_information)
            if not self.on_report(transaction, committed, failed):
                log.warning("N-EVENT-REPORT for unknown transaction %s", transaction)
        except Exception:
            log.exception("N-EVENT-REPORT from %s failed", _ae(event.assoc.requestor.ae_title))
            return PROCESSING_FAILURE, None
        return 0x0000, None

    def on_n_action(self, event: Any) -> tuple[Dataset, None]:
        """N-ACTION-RQ, Request Storage Commitment (PS3.4 J.3.2)."""
        req = event.request
        calling = _ae(event.assoc.requestor.ae_title)
        if str(req.RequestedSOPClassUID) != SOP_CLASS_UID:
            return _status(NO_SUCH_SOP_CLASS, "only Storage Commitment Push Model"), None
        if int(req.ActionTypeID or 0) != 1:
            return _status(NO_SUCH_ACTION, "Action Type ID must be 1 (PS3.4 J.3.2)"), None
        try:
            info = event.action_information
        except Exception:
            return _status(PROCESSING_FAILURE, "Action Information cannot be decoded"), None
        try:
            request_id = self.service.accept(info, calling, _ae(event.assoc.acceptor.ae_title))
        except CommitmentRefused as refused:
            log.warning("N-ACTION commitment from %s refused: %s", calling, refused.comment)
            return _status(refused.code, refused.comment), None
        except Exception as exc:
            log.exception("N-ACTION commitment from %s failed", calling)
            return _status(PROCESSING_FAILURE, f"internal error: {type(exc).__name__}"), None
        self.sender.remember(request_id, event.assoc)
        return _status(0x0000), None

    def on_dimse_sent(self, event: Any) -> None:
        """``EVT_DIMSE_SENT`` fires as a message is about to be queued: the worker is woken
        a moment later, so the N-EVENT-REPORT follows the N-ACTION-RSP on the wire."""
        if type(event.message).__name__ == "N_ACTION_RSP":
            timer = threading.Timer(0.1, self.wake)
            timer.daemon = True
            timer.start()
