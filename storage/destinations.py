"""Operator state of forwarding destinations: paused or running (``forward_destinations``).

A paused destination keeps its jobs; :func:`paused` is what the forwarding workers check
before they claim. Pausing does not interrupt a batch already claimed.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from storage.models import ForwardDestination


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
