"""Storage Commitment Push Model SCP (PS3.4 J, SOP Class 1.2.840.10008.1.20.1).

A requester sends N-ACTION-RQ (Action Type ID 1, Request Storage Commitment) with a
Transaction UID (0008,1195) and a Referenced SOP Sequence (0008,1199).
:meth:`CommitmentService.accept` checks it and writes it to the index as a
:class:`storage.models.CommitmentRequest` row *before* the N-ACTION-RSP goes out, so a
request survives a restart.  The :class:`CommitmentWorker` thread then answers every
pending request with an N-EVENT-REPORT (PS3.4 J.3.3): Event Type ID 1 (all committed) or
2 (with a Failed SOP Sequence (0008,1198), Failure Reason (0008,1197)):

* 0x0112 No such object instance: the index has no such SOP Instance;
* 0x0119 Class / instance conflict: it is stored with another SOP Class UID;
* 0x0110 Processing failure: indexed but the stored file is gone, or (``commit_when =
  "forwarded"``) a destination that routes it gave up (its forward job is ``dead``) or did
  not confirm it within ``forwarded_wait_s``.

With ``commit_when = "forwarded"`` an instance is committed only once the latest forward
job of it for every destination is ``done`` (:mod:`storage.outbox`) and, for destinations
with ``storage_commitment``, committed by the destination
(:mod:`scp.services.commitment_scu`); the report waits until then.

The report goes out through a :class:`ReportSender` the network layer implements
(:mod:`scp.net.commitment`): on the requesting association while it is open, else on a new
association to the requester's ``[[commitment_peers]]`` entry.  A failed delivery is
retried every ``retry_s`` seconds, ``max_attempts`` times, then the row is ``dead``.

No network code, no pynetdicom.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from scp import status
from scp.config import CommitmentConfig
from scp.metrics import METRICS
from storage.db import write_session
from storage.filestore import FileStore
from storage.models import CommitmentRequest, ForwardJob, Instance
from storage.outbox import as_utc
from storage.uids import InvalidUID, check_uid

log = logging.getLogger("spacing_scp.commitment")

#: Storage Commitment Push Model SOP Class and its well-known SOP Instance (PS3.4 J.3.5).
SOP_CLASS_UID = "1.2.840.10008.1.20.1"
SOP_INSTANCE_UID = "1.2.840.10008.1.20.1.1"

#: N-ACTION statuses (PS3.7 C.5, PS3.4 J.3.2.1.2) and Failure Reasons (0008,1197)
#: (PS3.3 C.14.1.1, PS3.4 J.3.3.1.1), from :mod:`scp.status`.
PROCESSING_FAILURE = status.PROCESSING_FAILURE
NO_SUCH_ACTION = status.COMMITMENT_NO_SUCH_ACTION
MISSING_ATTRIBUTE = status.COMMITMENT_MISSING_ATTRIBUTE
INVALID_ATTRIBUTE_VALUE = status.COMMITMENT_INVALID_ATTRIBUTE_VALUE
NOT_AUTHORIZED = status.COMMITMENT_REFUSED_NOT_AUTHORIZED
NO_SUCH_OBJECT_INSTANCE = status.COMMITMENT_NO_SUCH_OBJECT_INSTANCE
CLASS_INSTANCE_CONFLICT = status.COMMITMENT_CLASS_INSTANCE_CONFLICT

PENDING, DONE, DEAD = "pending", "done", "dead"


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class Report:
    """An N-EVENT-REPORT's Event Information (PS3.4 J.3.3.1, Table J.3-2)."""

    transaction_uid: str
    committed: list[tuple[str, str]] = field(default_factory=list)
    #: ``(sop_class_uid, sop_instance_uid, failure_reason)``.
    failed: list[tuple[str, str, int]] = field(default_factory=list)

    @property
    def event_type_id(self) -> int:
        """1: Storage Commitment Request Successful; 2: Complete - Failures Exist."""
        return 2 if self.failed else 1

    def dataset(self) -> Dataset:
        ds = Dataset()
        ds.TransactionUID = self.transaction_uid
        if self.committed:
            ds.ReferencedSOPSequence = referenced_sop_sequence(self.committed)
        if self.failed:
            items = []
            for sop_class, sop, reason in self.failed:
                item = _ref(sop_class, sop)
                item.FailureReason = reason
                items.append(item)
            ds.FailedSOPSequence = DicomSequence(items)
        return ds


def _ref(sop_class: str, sop: str) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = sop_class
    item.ReferencedSOPInstanceUID = sop
    return item


def referenced_sop_sequence(refs: Sequence[tuple[str, str]]) -> DicomSequence:
    """Referenced SOP Sequence (0008,1199) items of ``(sop_class_uid, sop_instance_uid)``."""
    return DicomSequence([_ref(sop_class, sop) for sop_class, sop in refs])


def action_information(transaction_uid: str, refs: Sequence[tuple[str, str]]) -> Dataset:
    """An N-ACTION Request Storage Commitment's Action Information (PS3.4 J.3.2.1.1)."""
    info = Dataset()
    info.TransactionUID = transaction_uid
    info.ReferencedSOPSequence = referenced_sop_sequence(refs)
    return info


@dataclass(frozen=True)
class PendingReport:
    """A request ready to be answered: its row id, requester and report."""

    id: int
    calling_ae_title: str
    report: Report


class ReportSender(Protocol):
    """Delivers an N-EVENT-REPORT (the network layer: :mod:`scp.net.commitment`)."""

    def send_report(self, pending: PendingReport) -> str | None:
        """Send ``pending.report`` to its requester; ``None`` when the requester answered
        Success, else why not (one line, for the log and ``last_error``)."""
        ...


class CommitmentRefused(Exception):
    """An N-ACTION the node refuses: ``code`` (N-ACTION status) and ``comment`` (LO)."""

    def __init__(self, code: int, comment: str) -> None:
        super().__init__(comment)
        self.code = code
        self.comment = comment[:64]


def _uid(value: object, what: str) -> str:
    if value is None or not str(value).strip(" \x00"):
        raise CommitmentRefused(MISSING_ATTRIBUTE, f"{what} missing")
    try:
        return check_uid(value, what)
    except InvalidUID:
        raise CommitmentRefused(INVALID_ATTRIBUTE_VALUE, f"{what} is not a valid UID") from None


def parse_action(info: Dataset | None) -> tuple[str, list[list[str]]]:
    """Transaction UID and ``[[sop_class_uid, sop_instance_uid], ...]`` of an N-ACTION's
    Action Information (PS3.4 J.3.2.1.1); raises :class:`CommitmentRefused`."""
    if info is None:
        raise CommitmentRefused(MISSING_ATTRIBUTE, "no Action Information")
    transaction = _uid(info.get("TransactionUID"), "Transaction UID")
    items = info.get("ReferencedSOPSequence")
    if not items:
        raise CommitmentRefused(MISSING_ATTRIBUTE, "Referenced SOP Sequence missing or empty")
    refs = [
        [
            _uid(item.get("ReferencedSOPClassUID"), "Referenced SOP Class UID"),
            _uid(item.get("ReferencedSOPInstanceUID"), "Referenced SOP Instance UID"),
        ]
        for item in items
    ]
    return transaction, refs


class CommitmentService:
    """Accepts Storage Commitment requests and answers them from the store and index."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        store: FileStore,
        cfg: CommitmentConfig,
        peers: Sequence[str],
        committing: Sequence[str] = (),
        visibility: Callable[[], bool] | None = None,
    ) -> None:
        """``peers``: the AE titles of ``[[commitment_peers]]`` (the only requesters);
        ``committing``: the destinations with ``storage_commitment`` (their jobs count
        once the destination committed, :mod:`scp.services.commitment_scu`);
        ``visibility``: read-your-writes (:mod:`scp.services.visibility`): every instance
        acknowledged before a report is made is indexed first (at most its wait)."""
        self.visibility = visibility
        self.sessions = sessions
        self.store = store
        self.cfg = cfg
        self.peers = frozenset(p.strip() for p in peers)
        self.committing = frozenset(committing)

    def accept(self, info: Dataset | None, calling: str, called: str) -> int:
        """Check and record an N-ACTION request; returns the row id.

        Raises :class:`CommitmentRefused`: 0x0124 for a requester not in
        ``[[commitment_peers]]``, 0x0120/0x0106 for a missing or invalid attribute.
        """
        if calling.strip() not in self.peers:
            raise CommitmentRefused(
                NOT_AUTHORIZED, f"AE {calling.strip()!r} is not a commitment peer"
            )
        transaction, refs = parse_action(info)
        now = utcnow()
        with write_session(self.sessions) as session:
            row = CommitmentRequest(
                transaction_uid=transaction,
                calling_ae_title=calling.strip()[:16],
                called_ae_title=called.strip()[:16],
                refs=refs,
                state=PENDING,
                attempts=0,
                next_attempt_at=now,
                created_at=now,
            )
            session.add(row)
            session.flush()
            row_id = int(row.id)
        METRICS.inc("spacing_scp_commitment_requests_total")
        log.info(
            "N-ACTION commitment id=%d transaction=%s from=%s instances=%d",
            row_id,
            transaction,
            calling.strip(),
            len(refs),
        )
        return row_id

    def evaluate(self, session: Session, row: CommitmentRequest, now: datetime) -> Report | None:
        """The report of ``row`` now, or ``None`` while a destination has yet to confirm
        an instance (``commit_when = "forwarded"``, within ``forwarded_wait_s``)."""
        refs = [(str(c), str(i)) for c, i in row.refs]
        found = {
            sop: (sop_class, path, instance_id)
            for instance_id, sop, sop_class, path in session.execute(
                select(
                    Instance.id, Instance.sop_instance_uid, Instance.sop_class_uid, Instance.path
                ).where(Instance.sop_instance_uid.in_([i for _, i in refs]))
            )
        }
        # The latest job per instance and destination (a resend adds a job next to the
        # history): its state, and its commitment state (destinations that commit).
        jobs: dict[int, dict[str, tuple[str, str | None]]] = {}
        if self.cfg.commit_when == "forwarded" and found:
            ids = [v[2] for v in found.values()]
            for instance_id, dest, state, committed in session.execute(
                select(
                    ForwardJob.instance_id,
                    ForwardJob.destination,
                    ForwardJob.state,
                    ForwardJob.commitment_state,
                )
                .where(ForwardJob.instance_id.in_(ids))
                .order_by(ForwardJob.id)
            ):
                jobs.setdefault(instance_id, {})[dest] = (state, committed)
        created = as_utc(row.created_at) or now
        waited_out = now - created >= timedelta(seconds=self.cfg.forwarded_wait_s)
        report = Report(row.transaction_uid)
        for sop_class, sop in refs:
            stored = found.get(sop)
            if stored is None:
                report.failed.append((sop_class, sop, NO_SUCH_OBJECT_INSTANCE))
            elif stored[0] != sop_class:
                report.failed.append((sop_class, sop, CLASS_INSTANCE_CONFLICT))
            elif not self.store.path(stored[1]).is_file():
                report.failed.append((sop_class, sop, PROCESSING_FAILURE))
            else:
                verdict = self._forwarded(jobs.get(stored[2], {}))
                if verdict is None and not waited_out:
                    return None
                if verdict:
                    report.committed.append((sop_class, sop))
                else:
                    report.failed.append((sop_class, sop, PROCESSING_FAILURE))
        return report

    def _forwarded(self, latest: dict[str, tuple[str, str | None]]) -> bool | None:
        """Every destination holds it (``True``), one never will (``False``: its job is
        ``dead`` or its commitment ``failed``), or not yet (``None``)."""
        verdict: bool | None = True
        for dest, (state, committed) in latest.items():
            if state == "dead" or committed == "failed":
                return False
            if state != "done" or (dest in self.committing and committed != "committed"):
                verdict = None
        return verdict

    def due(self, now: datetime | None = None) -> list[PendingReport]:
        """Pending requests due now whose report is ready."""
        if self.visibility is not None:
            self.visibility()  # an acknowledged instance is never reported missing
        now = now or utcnow()
        ready: list[PendingReport] = []
        with self.sessions() as session:
            rows = session.scalars(
                select(CommitmentRequest)
                .where(CommitmentRequest.state == PENDING)
                .order_by(CommitmentRequest.id)
                .limit(100)
            ).all()
            for row in rows:
                if (as_utc(row.next_attempt_at) or now) > now:
                    continue
                report = self.evaluate(session, row, now)
                if report is not None:
                    ready.append(PendingReport(int(row.id), row.calling_ae_title, report))
        return ready

    def delivered(self, pending: PendingReport, error: str | None) -> None:
        """Record a delivery attempt: ``done``, or retried later, or ``dead``."""
        now = utcnow()
        with write_session(self.sessions) as session:
            row = session.get(CommitmentRequest, pending.id)
            if row is None or row.state != PENDING:
                return
            row.attempts += 1
            if error is None:
                row.state, row.done_at, row.last_error = DONE, now, None
            else:
                row.last_error = error[:2000]
                if row.attempts >= self.cfg.max_attempts:
                    row.state = DEAD
                else:
                    row.next_attempt_at = now + timedelta(seconds=self.cfg.retry_s)
        report = pending.report
        outcome = "done" if error is None else ("dead" if row and row.state == DEAD else "retry")
        METRICS.inc("spacing_scp_commitment_reports_total", outcome=outcome)
        log.log(
            logging.INFO if error is None else logging.WARNING,
            "N-EVENT-REPORT commitment id=%d transaction=%s to=%s event=%d committed=%d "
            "failed=%d %s",
            pending.id,
            report.transaction_uid,
            pending.calling_ae_title,
            report.event_type_id,
            len(report.committed),
            len(report.failed),
            "delivered" if error is None else f"not delivered ({outcome}): {error}",
        )


class CommitmentWorker:
    """The background thread that delivers reports: woken after each N-ACTION-RSP, and
    every ``poll_s`` seconds (forward jobs finishing, retries, requests from before a
    restart)."""

    def __init__(
        self,
        service: CommitmentService,
        sender: ReportSender,
        passes: Sequence[Callable[[], object]] = (),
    ) -> None:
        """``passes``: more work run on every pass before the reports (the node's own
        commitment requests to its destinations)."""
        self.service = service
        self.sender = sender
        self.passes = list(passes)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="commitment", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def run_once(self) -> int:
        """Deliver every ready report once; returns how many were sent successfully."""
        for extra in self.passes:
            try:
                extra()
            except Exception:
                log.exception("commitment worker: %s failed", getattr(extra, "__name__", extra))
        sent = 0
        for pending in self.service.due():
            if self._stop.is_set():
                break
            try:
                error = self.sender.send_report(pending)
            except Exception as exc:  # a sender bug must not stop the worker
                log.exception("N-EVENT-REPORT id=%d failed", pending.id)
                error = f"internal error: {type(exc).__name__}"
            self.service.delivered(pending, error)
            sent += int(error is None)
        return sent

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            try:
                self.run_once()
            except Exception:
                log.exception("commitment worker: pass failed; retrying")
            self._wake.wait(self.service.cfg.poll_s)
