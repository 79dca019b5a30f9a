"""Operator actions on forwarding: destinations paused or running (``forward_destinations``),
one dead job revived.

A paused destination keeps its jobs; :func:`paused` is what the forwarding workers check
before they claim. Pausing does not interrupt a batch already claimed.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from storage.models import ForwardDestination, ForwardJob


def set_paused(session: Session, name: str, paused: bool, now: datetime | None = None) -> None:
    """Pause (``True``) or resume (``False``) destination ``name``; the caller commits."""
    now = now or datetime.now(UTC)
    row = session.get(ForwardDestination, name)
    if row is None:
        session.add(ForwardDestination(name=name, paused=paused, updated_at=now))
    else:
        row.paused = paused
        row.updated_at = now


def is_paused(session: Session, name: str) -> bool:
    """Whether destination ``name`` is paused (unknown destinations are running)."""
    return bool(
        session.scalar(select(ForwardDestination.paused).where(ForwardDestination.name == name))
    )


def paused(session: Session) -> set[str]:
    """Names of every paused destination."""
    return set(
        session.scalars(select(ForwardDestination.name).where(ForwardDestination.paused.is_(True)))
    )


def retry_job(session: Session, job_id: int, now: datetime | None = None) -> bool:
    """Revive one dead job (attempts from zero, due now); ``False`` when there is no dead
    job ``job_id``. The caller commits."""
    now = now or datetime.now(UTC)
    job = session.get(ForwardJob, job_id)
    if job is None or job.state != "dead":
        return False
    job.state = "pending"
    job.attempts = 0
    job.next_attempt_at = now
    job.claimed_by = None
    job.updated_at = now
    return True


def job_destination(session: Session, job_id: int) -> str | None:
    """The destination of job ``job_id`` (``None``: no such job)."""
    return session.scalar(select(ForwardJob.destination).where(ForwardJob.id == job_id))
