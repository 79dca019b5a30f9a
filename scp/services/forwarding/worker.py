"""Forwarding workers: one thread per destination, sending the outbox as a Storage SCU.

Each worker claims a batch of due jobs (:func:`storage.outbox.claim`), opens one
association for it (PS3.7 D.3, PS3.8 9.3.2) through its
:class:`~scp.services.forwarding.sender.AssociationOpener`, with the presentation
contexts of :mod:`scp.services.forwarding.contexts`, and sends the instances with
C-STORE (PS3.7 9.1.1), then releases the association.  An instance goes out in the
transfer syntax it is stored in (the file's bytes, streamed); only between the
uncompressed little-endian syntaxes is it re-encoded.  A compressed instance is never
transcoded: if its exact context was rejected it cannot be sent to that destination,
and the job is ``dead`` with the negotiation result as the reason.

Responses (PS3.4 B.2.3): Success (0x0000) and the warnings Coercion of Data
Elements (0xB000), Elements Discarded (0xB006) and Data Set does not match SOP
Class (0xB007) mean the destination stored the instance: the job is ``done``.
Any other status (a refusal) is retried with exponential backoff and jitter until
``max_attempts``.  Failures of reach (no association, no response: DIMSE timeout,
A-ABORT) never make a job ``dead`` before ``reach_retention_days``: the destination
is ``down`` (:mod:`scp.services.forwarding.health`, one log line), the worker probes it
with one job at most every ``probe_interval_s`` and, when it answers again, sends every
waiting job at once.  Since each destination has its own thread, an unreachable
destination never delays the others.  What a job sends: :mod:`scp.services.forwarding.
source` (the newest version of the instance, pinned while it goes out).
"""

from __future__ import annotations

import functools
import logging
import random
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy.orm import Session, sessionmaker

from scp import status as dimse
from scp.config import Config, Destination
from scp.metrics import METRICS
from scp.services.forwarding.contexts import contexts_for, pick_context, split_batch
from scp.services.forwarding.egress import unannotated_finding
from scp.services.forwarding.health import DestinationHealth
from scp.services.forwarding.sender import (
    AssociationOpener,
    AssociationSettings,
    StoreAssociation,
    StowSettings,
)
from scp.services.forwarding.source import sendable_file
from storage import destinations, outbox
from storage.db import write_session
from storage.filestore import FileStore
from storage.index import add_instance_finding

log = logging.getLogger("spacing_scp.forward")

#: Statuses after which the destination holds the instance (PS3.4 B.2.3).
DONE_STATUSES: frozenset[int] = dimse.SUCCESS_STATUSES | dimse.WARNING_STATUSES
NO_RESPONSE = "no C-STORE response (DIMSE timeout or association aborted)"
#: Seconds an association stays open waiting for more jobs before it is released.
LINGER_S = 0.5


@dataclass(frozen=True)
class WorkerSettings:
    """What every worker of a node shares."""

    ae_title: str
    lease_s: float = 300.0
    poll_s: float = 2.0
    batch_size: int = 50
    connect_timeout_s: float = 10.0
    acse_timeout: float = 30.0
    dimse_timeout: float = 120.0
    network_timeout: float = 120.0
    max_pdu: int = 262144
    annotate: bool = True
    claimant_timeout_s: float = 5.0
    probe_interval_s: float = 30.0

    @classmethod
    def from_config(cls, cfg: Config) -> WorkerSettings:
        return cls(
            ae_title=cfg.node.ae_title,
            lease_s=cfg.forwarding.lease_s,
            poll_s=cfg.forwarding.poll_s,
            batch_size=cfg.forwarding.batch_size,
            connect_timeout_s=cfg.forwarding.connect_timeout_s,
            acse_timeout=cfg.node.acse_timeout,
            dimse_timeout=cfg.node.dimse_timeout,
            network_timeout=cfg.node.network_timeout,
            max_pdu=cfg.node.max_pdu_size,
            annotate=cfg.policy.annotate_private,
            claimant_timeout_s=cfg.forwarding.claimant_timeout_s,
            probe_interval_s=cfg.forwarding.probe_interval_s,
        )

    def stow(self, dest: Destination) -> StowSettings:
        """How this node sends to a ``type = "stow-rs"`` destination."""
        return StowSettings(
            url=dest.url.rstrip("/"),
            token=dest.token,
            username=dest.username,
            password=dest.password,
            verify_tls=dest.verify_tls,
            ca_file=dest.ca_file,
            connect_timeout_s=self.connect_timeout_s,
            response_timeout_s=self.dimse_timeout,
            user_agent=f"spacing-scp ({self.ae_title})",
        )

    def association(self, dest: Destination) -> AssociationSettings:
        """How this node associates with ``dest`` (its calling AE title, or the node's)."""
        return AssociationSettings(
            host=dest.host,
            port=dest.port,
            called_ae_title=dest.ae_title,
            calling_ae_title=dest.calling_ae_title or self.ae_title,
            connect_timeout_s=self.connect_timeout_s,
            acse_timeout_s=self.acse_timeout,
            dimse_timeout_s=self.dimse_timeout,
            network_timeout_s=self.network_timeout,
            max_pdu=self.max_pdu,
        )


# -- one destination ------------------------------------------------------------------------


class DestinationWorker:
    """Sends one destination's jobs, in its own thread."""

    def __init__(
        self,
        dest: Destination,
        sessions: sessionmaker[Session],
        store: FileStore,
        settings: WorkerSettings,
        node_id: str,
        opener: AssociationOpener,
        rng: random.Random | None = None,
    ) -> None:
        self.dest = dest
        self.opener = opener
        self.sessions = sessions
        self.store = store
        self.settings = settings
        self.node_id = node_id
        self.rng = rng or random.Random()
        self.wake_event = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"forward-{dest.name}", daemon=True)
        self.health = DestinationHealth(
            dest.name,
            retry_initial_s=dest.retry_initial_s,
            probe_interval_s=min(settings.probe_interval_s, dest.retry_max_s),
            waiting=self._waiting,
            rng=self.rng,
        )
        self._held: set[int] = set()
        self._renew_at = 0.0
        #: The destination was paused by an operator at the last look (``run_once``).
        self.paused = False

    # -- control ---------------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        self.wake_event.set()

    def request_stop(self) -> None:
        self._stop.set()
        self.wake_event.set()

    def join(self, timeout: float) -> bool:
        if self._thread.ident is not None:
            self._thread.join(timeout)
        return not self._thread.is_alive()

    def abort(self) -> None:
        """Abort the association in progress (the node's grace period is over)."""
        if self.opener.abort():
            log.warning("forward %s: aborting the association (stopping)", self.dest.name)

    # -- loop ------------------------------------------------------------------------------
    def _run(self) -> None:
        d = self.dest
        where = d.url if d.type == "stow-rs" else f"{d.ae_title}@{d.host}:{d.port}"
        log.info("forward %s: worker started (%s)", d.name, where)
        while not self._stop.is_set():
            probe = self.health.down
            if probe:
                pause = self.health.next_probe - time.monotonic()
                if pause > 0:
                    self._stop.wait(pause)
                    continue
            self.wake_event.clear()
            try:
                worked = self.run_once(probe=probe)
            except Exception:
                log.exception("forward %s: worker error", self.dest.name)
                self._release_held()
                self._stop.wait(min(5.0, self.settings.poll_s))
                continue
            if not worked:
                self._idle()
        log.info("forward %s: worker stopped", self.dest.name)

    def _idle(self) -> None:
        timeout = self.settings.poll_s
        if self.health.down:
            timeout = max(0.02, min(timeout, self.health.next_probe - time.monotonic()))
        try:
            with self.sessions() as session:
                due = outbox.next_due(session, self.dest.name)
        except Exception:
            log.debug("next_due failed", exc_info=True)
            due = None
        if due is not None and not self.paused:  # paused: look again after poll_s, or a wake
            until = (due - datetime.now(UTC)).total_seconds()
            timeout = min(timeout, max(0.02, until + 0.01))
        self.wake_event.wait(timeout)

    def _claim(self, limit: int, probe: bool = False) -> list[outbox.ClaimedJob]:
        """Up to ``limit`` due jobs (``probe``: any waiting one); none while the destination
        is paused by an operator (:mod:`storage.destinations`), checked before every claim."""
        with write_session(self.sessions) as session:
            self.paused = destinations.is_paused(session, self.dest.name)
            if self.paused:
                return []
            return outbox.claim(
                session,
                self.dest.name,
                self.node_id,
                limit=limit,
                lease_s=self.settings.lease_s,
                claimant_timeout_s=self.settings.claimant_timeout_s,
                any_pending=probe,
            )

    def _waiting(self) -> int:
        with self.sessions() as session:
            return outbox.waiting(session, self.dest.name)

    def run_once(self, probe: bool = False) -> bool:
        """Claim one batch and send it; ``False`` when nothing was due or the destination
        is paused by an operator.  ``probe``: the
        destination is down, try one waiting job whatever its schedule."""
        jobs = self._claim(1 if probe else self.settings.batch_size, probe)
        if not jobs:
            return False
        self._held = {j.id for j in jobs}
        self._renew_at = time.monotonic() + self.settings.lease_s / 3
        try:
            for group in split_batch(jobs):
                if self._stop.is_set() or (self.health.down and not probe):
                    break  # the rest is released, no attempt counted
                self._send_group(group)
                probe = False
        finally:
            self._release_held()
        return True

    # -- settling jobs ---------------------------------------------------------------------
    def _release_held(self) -> None:
        if not self._held:
            return
        ids = sorted(self._held)
        self._held.clear()
        with write_session(self.sessions) as session:
            outbox.release(session, ids, self.node_id)

    def _keep_lease(self, job_id: int) -> bool:
        """Renew the batch's leases when a third of the lease is used; ``False`` if this
        job was taken over (the lease ran out), so it must not be sent."""
        if time.monotonic() >= self._renew_at:
            with write_session(self.sessions) as session:
                self._held = outbox.renew(
                    session, sorted(self._held), self.node_id, self.settings.lease_s
                )
            self._renew_at = time.monotonic() + self.settings.lease_s / 3
        return job_id in self._held

    def _settled(self, job_id: int) -> None:
        self._held.discard(job_id)

    def _fail(
        self, job: outbox.ClaimedJob, error: str, status: int | None = None, reach: bool = False
    ) -> None:
        """A failed attempt: ``reach`` (no association, no response) waits up to the
        destination's ``reach_retention_days``, anything else counts ``max_attempts``."""
        with write_session(self.sessions) as session:
            state = outbox.fail(
                session,
                job.id,
                self.node_id,
                error=error,
                status=status,
                max_attempts=self.dest.max_attempts,
                retry_initial_s=self.dest.retry_initial_s,
                retry_max_s=self.dest.retry_max_s,
                rng=self.rng,
                reach_retention_s=self.dest.reach_retention_days * 86400 if reach else None,
            )
        self._settled(job.id)
        outcome = "dead" if state == outbox.DEAD else "retry"
        METRICS.inc("spacing_scp_forward_sent_total", destination=self.dest.name, outcome=outcome)
        # One line per job only when it is given up; retries show in the destination's
        # state lines (health) and in the job's last_error.
        log.log(
            logging.ERROR if outcome == "dead" else logging.DEBUG,
            "forward %s: sop=%s %s: %s",
            self.dest.name,
            job.sop_instance_uid,
            "dead" if outcome == "dead" else "will retry",
            error,
        )

    def _bury(self, job: outbox.ClaimedJob, reason: str) -> None:
        with write_session(self.sessions) as session:
            outbox.bury(session, job.id, self.node_id, reason)
        self._settled(job.id)
        METRICS.inc("spacing_scp_forward_sent_total", destination=self.dest.name, outcome="dead")
        log.error("forward %s: sop=%s dead: %s", self.dest.name, job.sop_instance_uid, reason)

    def _done(self, job: outbox.ClaimedJob, status: int, ms: float) -> None:
        with write_session(self.sessions) as session:
            outbox.complete(session, job.id, self.node_id, status)
        self._settled(job.id)
        self.health.stored()
        METRICS.inc("spacing_scp_forward_sent_total", destination=self.dest.name, outcome="done")
        log.info(
            "forward %s: sop=%s status=0x%04X (%s) ms=%.1f",
            self.dest.name,
            job.sop_instance_uid,
            status,
            dimse.describe(status),
            ms,
        )

    # -- the association -------------------------------------------------------------------
    def _send_group(self, group: list[outbox.ClaimedJob]) -> None:
        assoc = self.opener.open(contexts_for(group))
        if not assoc.is_established:
            self._not_associated(assoc, group)
            return
        try:
            self._send_over(assoc, group)
            self._keep_sending(assoc)
        finally:
            if assoc.is_established:
                assoc.release()

    def _keep_sending(self, assoc: StoreAssociation) -> None:
        """Jobs that become due while the association is open (a series still arriving)
        go over it too, as long as its accepted contexts fit them; after ``LINGER_S``
        without new jobs the association is released."""
        while not self._stop.is_set() and assoc.is_established and not self.health.down:
            self.wake_event.clear()
            jobs = self._claim(self.settings.batch_size)
            if not jobs:
                if self.wake_event.wait(LINGER_S):
                    continue
                return
            self._held.update(j.id for j in jobs)
            # Only jobs with an accepted context in their own transfer syntax: the others
            # were not proposed here, and get an association that proposes them.
            fits = [j for j in jobs if pick_context(assoc, j)[0] == "file"]
            if len(fits) < len(jobs):
                with write_session(self.sessions) as session:
                    outbox.release(session, [j.id for j in jobs if j not in fits], self.node_id)
                self._held.difference_update(j.id for j in jobs if j not in fits)
                self._send_over(assoc, fits)
                return
            self._send_over(assoc, jobs)

    def _not_associated(self, assoc: StoreAssociation, group: list[outbox.ClaimedJob]) -> None:
        if assoc.rejected_contexts and not assoc.accepted_contexts:
            # The destination answered, and accepts none of the contexts: final.
            self._answered()
            for job in group:
                reason, _ = pick_context(assoc, job)
                self._bury(job, reason)
            return
        if self._stop.is_set():
            return  # released by run_once, no attempt counted
        self._unreachable(group[:1], assoc.failure)

    def _note_unannotated(self, job: outbox.ClaimedJob, exc: Exception) -> None:
        """The annotation of ``job`` failed: it goes out as stored, with one log line and
        the finding on the instance."""
        finding = unannotated_finding(exc)
        log.warning("forward %s: job %d: %s", self.dest.name, job.id, finding.message)
        try:
            with write_session(self.sessions) as session:
                add_instance_finding(session, job.instance_id, finding)
        except Exception:
            log.exception("forward %s: could not record %s", self.dest.name, finding.code)

    def _answered(self) -> None:
        """The destination answered (a C-STORE response, or a negotiation that rejected
        every context): if it was down, every job waiting on it is due now."""
        if self.health.answered():
            with write_session(self.sessions) as session:
                outbox.retry(session, destination=self.dest.name)

    def _unreachable(self, jobs: list[outbox.ClaimedJob], error: str) -> None:
        """A failure of reach: the destination is down; ``jobs`` (the one tried) count an
        attempt, the rest of the batch goes back untouched."""
        pause = self.health.unreachable(error)
        for job in jobs:
            self._fail(job, f"{error} (next probe in {pause:.1f}s)", reach=True)

    def _send_over(self, assoc: StoreAssociation, group: list[outbox.ClaimedJob]) -> None:
        for job in group:
            if self._stop.is_set() or not assoc.is_established:
                return  # the rest is released, no attempt counted
            if not self._keep_lease(job.id):
                log.warning("forward %s: lost the lease of job %d", self.dest.name, job.id)
                continue
            mode, cx = pick_context(assoc, job)
            if cx is None:
                self._bury(job, mode)
                continue
            started = time.perf_counter()
            try:
                with sendable_file(
                    self.sessions,
                    self.store,
                    job.instance_id,
                    send=self.dest.send,
                    annotate=self.settings.annotate,
                    on_unannotated=functools.partial(self._note_unannotated, job),
                ) as path:
                    rsp = assoc.send_c_store(path, reencode=mode != "file")
            except Exception as exc:
                error = f"could not send: {type(exc).__name__}: {exc}"
                if assoc.is_established or self._stop.is_set():
                    self._fail(job, error)
                    continue
                self._unreachable([job], error)
                return
            code = rsp.status
            if code is None:
                if self._stop.is_set():
                    return  # aborted by stop: released, no attempt counted
                why = f": {rsp.error_comment}" if rsp.error_comment else ""  # (STOW-RS says)
                self._unreachable([job], NO_RESPONSE + why)
                return
            self._answered()  # a response, not only an association: it works again
            if code in DONE_STATUSES:
                self._done(job, code, (time.perf_counter() - started) * 1000)
            else:
                text = f"C-STORE status 0x{code:04X} ({dimse.describe(code)})"
                if rsp.error_comment:
                    text += f": {rsp.error_comment}"
                self.health.refused(code, text)
                self._fail(job, text, status=code)
