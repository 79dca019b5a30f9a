"""The node as Storage Commitment SCU towards its destinations (PS3.4 J, Push Model).

For every ``[[destinations]]`` entry with ``storage_commitment = true``, the instances
the destination has stored (forward job ``done``) are put in an N-ACTION request
(Request Storage Commitment, Action Type ID 1) with a new Transaction UID; the jobs are
marked ``requested`` with that UID *before* it is sent, so the N-EVENT-REPORT finds them
whichever association it comes on.  :meth:`DestinationCommitment.on_report` marks each
referenced job ``committed`` or ``failed``.  A request whose report never came is asked
again after ``[commitment] forwarded_wait_s / 10`` seconds (a new Transaction UID).

``[commitment] commit_when = "forwarded"`` then counts an instance as forwarded to such a
destination only once its job is ``committed`` (:mod:`scp.services.commitment`).

The N-ACTION goes out through a :class:`CommitmentRequester` the network layer
implements (:mod:`scp.net.commitment`).  No pynetdicom here.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Protocol

from pydicom.uid import generate_uid
from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from scp.config import Destination
from storage.db import write_session
from storage.models import ForwardJob, Instance

log = logging.getLogger("spacing_scp.commitment")

REQUESTED, COMMITTED, FAILED = "requested", "committed", "failed"
#: Instances asked for in one N-ACTION at most.
BATCH = 500


class CommitmentRequester(Protocol):
    """Sends an N-ACTION Request Storage Commitment to a destination."""

    def request(
        self, destination: Destination, transaction_uid: str, refs: Sequence[tuple[str, str]]
    ) -> str | None:
        """Send it; ``None`` when the destination answered Success, else why not.  A
        report that arrives on the same association is passed to ``on_report``."""
        ...


class DestinationCommitment:
    """Asks the commitment destinations to commit, and records their reports."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        destinations: Sequence[Destination],
        requester: CommitmentRequester,
        resend_after_s: float,
    ) -> None:
        self.sessions = sessions
        self.destinations = [d for d in destinations if d.storage_commitment]
        self.requester = requester
        self.resend_after_s = resend_after_s

    def run_once(self) -> None:
        """One N-ACTION per destination with stored-but-not-committed instances."""
        for dest in self.destinations:
            self._ask(dest)

    def _ask(self, dest: Destination) -> None:
        now = datetime.now(UTC)
        stale = now - timedelta(seconds=self.resend_after_s)
        with write_session(self.sessions) as session:
            rows = session.execute(
                select(ForwardJob.id, Instance.sop_class_uid, Instance.sop_instance_uid)
                .join(Instance, ForwardJob.instance_id == Instance.id)
                .where(
                    ForwardJob.destination == dest.name,
                    ForwardJob.state == "done",
                    or_(
                        ForwardJob.commitment_state.is_(None),
                        and_(
                            ForwardJob.commitment_state == REQUESTED,
                            ForwardJob.updated_at < stale,
                        ),
                    ),
                )
                .order_by(ForwardJob.id)
                .limit(BATCH)
            ).all()
            if not rows:
                return
            transaction = generate_uid()
            session.execute(
                update(ForwardJob)
                .where(ForwardJob.id.in_([r[0] for r in rows]))
                .values(
                    commitment_state=REQUESTED,
                    commitment_transaction_uid=transaction,
                    updated_at=now,
                )
                .execution_options(synchronize_session=False)
            )
        refs = [(str(sop_class), str(sop)) for _, sop_class, sop in rows]
        error = self.requester.request(dest, transaction, refs)
        log.log(
            logging.INFO if error is None else logging.WARNING,
            "N-ACTION commitment to %s transaction=%s instances=%d%s",
            dest.name,
            transaction,
            len(refs),
            "" if error is None else f" failed (asked again later): {error}",
        )

    def on_report(
        self, transaction_uid: str, committed: Sequence[str], failed: Sequence[str]
    ) -> int:
        """Record an N-EVENT-REPORT from a destination: the jobs of ``transaction_uid``
        whose SOP Instance UID is listed become ``committed`` or ``failed``; returns how
        many changed (0: an unknown transaction)."""
        changed = 0
        now = datetime.now(UTC)
        with write_session(self.sessions) as session:
            for state, sops in ((COMMITTED, committed), (FAILED, failed)):
                if not sops:
                    continue
                ids = select(Instance.id).where(Instance.sop_instance_uid.in_(list(sops)))
                result = session.execute(
                    update(ForwardJob)
                    .where(
                        ForwardJob.commitment_transaction_uid == transaction_uid,
                        ForwardJob.instance_id.in_(ids),
                    )
                    .values(commitment_state=state, updated_at=now)
                    .execution_options(synchronize_session=False)
                )
                changed += int(getattr(result, "rowcount", 0) or 0)
        log.info(
            "N-EVENT-REPORT commitment transaction=%s committed=%d failed=%d jobs=%d",
            transaction_uid,
            len(committed),
            len(failed),
            changed,
        )
        return changed
