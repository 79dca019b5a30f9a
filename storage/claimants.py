"""Heartbeats of the processes that claim forward jobs (the ``forward_nodes`` table).

Every forwarding process writes ``heartbeat_at`` every ``heartbeat_s`` seconds
(:func:`beat`) and deletes its row when it stops cleanly (:func:`forget`).  A job
``in_flight`` is taken over as soon as its claimant is provably dead: its row exists
and its heartbeat is older than the claimant timeout (:func:`dead_claimant`).  A
claimant without a row (an older node version, a tool) is judged by the job's lease
alone, as before.  Times are the nodes' UTC clocks, which must agree to well under
the timeout (NTP), as they must already for leases.

All functions take a session inside the caller's transaction and do not commit.
"""

from __future__ import annotations

import os
import socket
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, delete, exists, insert, update
from sqlalchemy.orm import Session

from storage.models import ForwardJob, ForwardNode


def _now(now: datetime | None) -> datetime:
    return now or datetime.now(UTC)


def beat(session: Session, node_id: str, now: datetime | None = None) -> None:
    """Record that ``node_id`` (this process) is alive at ``now``."""
    now = _now(now)
    result = session.execute(
        update(ForwardNode)
        .where(ForwardNode.node_id == node_id)
        .values(heartbeat_at=now)
        .execution_options(synchronize_session=False)
    )
    if not getattr(result, "rowcount", 0):
        session.execute(
            insert(ForwardNode).values(
                node_id=node_id,
                host=socket.gethostname()[:255],
                pid=os.getpid(),
                started_at=now,
                heartbeat_at=now,
            )
        )


def forget(session: Session, node_id: str) -> None:
    """``node_id`` stopped cleanly (its jobs were given back): drop its row."""
    session.execute(delete(ForwardNode).where(ForwardNode.node_id == node_id))


def prune(session: Session, older_than_s: float, now: datetime | None = None) -> int:
    """Drop rows of nodes silent for ``older_than_s`` seconds that hold no job in flight."""
    cutoff = _now(now) - timedelta(seconds=older_than_s)
    result = session.execute(
        delete(ForwardNode)
        .where(
            ForwardNode.heartbeat_at < cutoff,
            ~exists().where(
                ForwardJob.claimed_by == ForwardNode.node_id, ForwardJob.state == "in_flight"
            ),
        )
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0))


def dead_claimant(timeout_s: float, now: datetime) -> Any:
    """SQL condition on a ``forward_jobs`` row: its claimant's heartbeat is older than
    ``timeout_s`` seconds at ``now`` (the claimant process is dead)."""
    return exists().where(
        and_(
            ForwardNode.node_id == ForwardJob.claimed_by,
            ForwardNode.heartbeat_at < now - timedelta(seconds=timeout_s),
        )
    )
