"""The node's forwarding as a whole: routing at ingest, one worker per destination.

:class:`Forwarder` queues an instance's jobs in the transaction that indexes it
(:func:`storage.outbox.enqueue`, destinations chosen by
:mod:`scp.services.forwarding.routing`), runs a
:class:`~scp.services.forwarding.worker.DestinationWorker` per ``[[destinations]]``
entry, stops them within the node's grace period, and reports the queue's gauges.
While it runs, a heartbeat thread writes this node's row in ``forward_nodes``
(:mod:`storage.claimants`) every ``heartbeat_s``: jobs a dead node held in flight are
taken over by the others (or by this node once restarted) ``claimant_timeout_s``
after its last heartbeat, while a live node's jobs are never taken.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Iterable

from sqlalchemy import event
from sqlalchemy.orm import Session, sessionmaker

from scp.config import Config, Destination
from scp.pipeline.model import PipelineResult
from scp.services.forwarding.routing import facts_from_entry, route
from scp.services.forwarding.sender import AssociationOpener, OpenerFactory, StowOpenerFactory
from scp.services.forwarding.worker import DestinationWorker, WorkerSettings
from storage import claimants, outbox
from storage.db import write_session
from storage.filestore import FileStore
from storage.index import IndexedInstance, IndexEntry

log = logging.getLogger("spacing_scp.forward")


def default_node_id() -> str:
    """``host:pid:random``: names this process's leases in the outbox."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class Forwarder:
    """The node's forwarding: routing at ingest, one worker per destination."""

    def __init__(
        self,
        cfg: Config,
        sessions: sessionmaker[Session],
        store: FileStore,
        opener_factory: OpenerFactory,
        stow_factory: StowOpenerFactory | None = None,
    ) -> None:
        """``opener_factory``: each DIMSE destination's Storage SCU
        (:class:`scp.net.scu.StorageSCU`); ``stow_factory``: each ``type = "stow-rs"``
        destination's sender (:class:`scp.net.stow_rs.StowRsSender`); both wired in by
        :mod:`scp.node`."""
        self.destinations = list(cfg.destinations)
        self.sessions = sessions
        self.node_id = cfg.forwarding.node_id or default_node_id()
        settings = WorkerSettings.from_config(cfg)

        def opener(d: Destination) -> AssociationOpener:
            if d.type != "stow-rs":
                return opener_factory(settings.association(d))
            if stow_factory is None:
                raise ValueError(f"destination {d.name}: no STOW-RS sender wired in")
            return stow_factory(settings.stow(d))

        self.workers = {
            d.name: DestinationWorker(d, sessions, store, settings, self.node_id, opener(d))
            for d in self.destinations
        }
        self._started = False
        self.heartbeat_s = cfg.forwarding.heartbeat_s
        self.claimant_timeout_s = cfg.forwarding.claimant_timeout_s
        self._beating = threading.Event()
        self._beat_failing = False
        self._heart = threading.Thread(
            target=self._beat_loop, name="forward-heartbeat", daemon=True
        )

    def on_indexed(
        self,
        session: Session,
        instance: IndexedInstance,
        entry: IndexEntry,
        result: PipelineResult,
    ) -> None:
        """Ingest hook, inside the transaction that indexes the instance: queue its jobs,
        and wake their workers once that transaction has committed."""
        names = route(self.destinations, facts_from_entry(entry))
        added = outbox.enqueue(session, instance.id, names, new_instance=not instance.resend)
        if added:
            event.listen(session, "after_commit", lambda _s: self.wake(added), once=True)

    def wake(self, names: Iterable[str] | None = None) -> None:
        for name in self.workers if names is None else names:
            worker = self.workers.get(name)
            if worker is not None:
                worker.wake()

    def start(self) -> None:
        if self._started:
            return
        self._started = True
        if self.workers:
            self._beat()  # registered before the first claim
            self._heart.start()
        for worker in self.workers.values():
            worker.start()
        if self.workers:
            log.info(
                "forwarding to %d destination(s) as %s: %s",
                len(self.workers),
                self.node_id,
                ", ".join(self.workers),
            )

    def _beat(self) -> bool:
        """One heartbeat; a failure is logged once, and its end once (not every beat)."""
        try:
            with write_session(self.sessions) as session:
                claimants.beat(session, self.node_id)
        except Exception as exc:  # the database is down: the next beat tries again
            if not self._beat_failing:
                log.warning("forward heartbeat of %s failing: %s", self.node_id, exc)
            self._beat_failing = True
            return False
        if self._beat_failing:
            log.info("forward heartbeat of %s written again", self.node_id)
        self._beat_failing = False
        return True

    def _beat_loop(self) -> None:
        beats = 0
        while not self._beating.wait(self.heartbeat_s):
            if self._beat():
                beats += 1
            if beats % 3600 == 1:  # now and then: rows of nodes long gone
                try:
                    with write_session(self.sessions) as session:
                        claimants.prune(session, older_than_s=86400)
                except Exception:
                    log.debug("pruning forward_nodes failed", exc_info=True)

    def request_stop(self) -> None:
        for worker in self.workers.values():
            worker.request_stop()

    def stop(self, grace_s: float) -> None:
        """Let running C-STOREs finish within ``grace_s``, then abort; unsent jobs of a
        claimed batch go back to ``pending`` (a job is never lost)."""
        self.request_stop()
        deadline = time.monotonic() + grace_s
        for worker in self.workers.values():
            worker.join(max(0.0, deadline - time.monotonic()))
        for worker in self.workers.values():
            if not worker.join(0):
                worker.abort()
        busy = [w.dest.name for w in self.workers.values() if not w.join(5)]
        for name in busy:
            log.warning(
                "forward %s: worker still busy; other nodes take its jobs over %.0f s"
                " after this node's last heartbeat",
                name,
                self.claimant_timeout_s,
            )
        self._beating.set()
        if self._heart.ident is not None:
            self._heart.join(self.heartbeat_s + 5)
        if self._started and self.workers and not busy:
            try:  # every held job was given back: nothing of this node is in flight
                with write_session(self.sessions) as session:
                    claimants.forget(session, self.node_id)
            except Exception as exc:
                log.warning("forward: could not drop %s from forward_nodes: %s", self.node_id, exc)

    def gauges(self) -> dict[str, float]:
        """Queue depth per destination and state, and the oldest undelivered job's age."""
        with self.sessions() as session:
            rows = outbox.summary(session, self.workers)
        out: dict[str, float] = {}
        for row in rows:
            dest = _label(row["destination"])
            for state, count in row["counts"].items():
                out[f'spacing_scp_forward_jobs{{destination="{dest}",state="{state}"}}'] = count
            age = row["oldest_pending_age_s"]
            key = f'spacing_scp_forward_oldest_pending_age_seconds{{destination="{dest}"}}'
            out[key] = float(age or 0.0)
        return out


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
