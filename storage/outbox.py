"""The forwarding outbox: one :class:`~storage.models.ForwardJob` per instance and destination.

States: ``pending`` (waits for ``next_attempt_at``), ``in_flight`` (claimed by one
worker until ``lease_until``), ``done`` (the destination answered Success or a
warning, PS3.4 B.2.3) and ``dead`` (given up; ``last_error`` says why).

A job is claimed with one guarded ``UPDATE``: only rows that are still
``pending`` and due, or ``in_flight`` with an expired lease or a dead claimant (its
heartbeat, :mod:`storage.claimants`, is too old), change hands, so two
workers, in one process or in several sharing the database, never hold the same
job.  On PostgreSQL the candidate rows are selected ``FOR UPDATE SKIP LOCKED``
(concurrent claimers take different rows instead of waiting); SQLite has no row
locks, but its write transactions (``BEGIN IMMEDIATE``, :func:`storage.db.write_session`)
already run one at a time.  Every later change of a claimed job is guarded by
``claimed_by`` and the ``in_flight`` state, so a worker that lost its lease cannot
overwrite what the new holder did.

All functions take a session inside the caller's transaction and do not commit.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from sqlalchemy import (
    Table,
    and_,
    bindparam,
    case,
    delete,
    exists,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.orm import Session, aliased

from storage import claimants
from storage.models import ForwardJob, Instance, Series

PENDING = "pending"
IN_FLIGHT = "in_flight"
DONE = "done"
DEAD = "dead"
STATES: tuple[str, ...] = (PENDING, IN_FLIGHT, DONE, DEAD)

#: ``last_error`` is kept to this many characters.
MAX_ERROR_CHARS = 2000


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; every stored time is UTC."""
    if value is None:
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def iso(value: datetime | None) -> str | None:
    aware = as_utc(value)
    return None if aware is None else aware.isoformat()


@dataclass(frozen=True)
class ClaimedJob:
    """A job a worker holds, with what it needs of its instance."""

    id: int
    instance_id: int
    destination: str
    attempts: int
    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax_uid: str
    path: str
    original_path: str | None


# -- creating -------------------------------------------------------------------------------


_JOBS = cast(Table, ForwardJob.__table__)
#: The instance's live jobs, locked: see :func:`enqueue`.
_LIVE_JOBS = (
    select(_JOBS.c.destination, _JOBS.c.state)
    .where(
        _JOBS.c.instance_id == bindparam("instance_id"),
        _JOBS.c.destination.in_(bindparam("names", expanding=True)),
        _JOBS.c.state.in_((PENDING, IN_FLIGHT)),
    )
    .with_for_update()
)
_JOB_INSERT = insert(_JOBS)


def enqueue(
    session: Session,
    instance_id: int,
    destinations: Iterable[str],
    now: datetime | None = None,
    *,
    new_instance: bool = False,
) -> list[str]:
    """Queue the instance for each destination; return the destinations that got a new job.

    A destination that already has a ``pending`` job for the instance keeps that one (a
    resend does not queue the same instance twice); ``in_flight``, ``done`` and ``dead``
    jobs are history, so a resend gets a new job next to them.  ``new_instance``: the
    instance row was inserted by this transaction, so it has no job yet and the look-up
    is skipped (the ingest path, once per instance).

    The look-up locks the instance's ``pending`` and ``in_flight`` jobs (PostgreSQL), as
    :func:`fail` and :func:`release` lock a job before they drop its pending twins: a
    worker putting an in-flight job back to ``pending`` at the same moment either did so
    before (the job is seen pending here: no new one) or sees the new job once this
    transaction has committed (and drops it), so one pending job per instance and
    destination remains.
    """
    names = list(dict.fromkeys(destinations))
    if not names:
        return []
    now = now or utcnow()
    session.flush()  # pending ORM changes first: the statements below bypass the session
    conn = session.connection()
    added = names
    if not new_instance:
        live = conn.execute(_LIVE_JOBS, {"instance_id": instance_id, "names": names})
        waiting = {name for name, state in live if state == PENDING}
        added = [name for name in names if name not in waiting]
    if added:
        conn.execute(
            _JOB_INSERT,
            [
                {
                    "instance_id": instance_id,
                    "destination": name,
                    "state": PENDING,
                    "attempts": 0,
                    "refusals": 0,
                    "next_attempt_at": now,
                    "created_at": now,
                    "updated_at": now,
                }
                for name in added
            ],
        )
    return added


# -- claiming and settling ------------------------------------------------------------------


def _due(now: datetime, claimant_timeout_s: float | None = None, any_pending: bool = False) -> Any:
    """Claimable rows: ``pending`` and due (any ``pending`` with ``any_pending``), or
    ``in_flight`` with an expired lease or, given ``claimant_timeout_s``, a dead claimant
    (:func:`storage.claimants.dead_claimant`)."""
    pending: Any = ForwardJob.state == PENDING
    if not any_pending:
        pending = and_(pending, ForwardJob.next_attempt_at <= now)
    lost: Any = ForwardJob.lease_until < now
    if claimant_timeout_s is not None:
        lost = or_(lost, claimants.dead_claimant(claimant_timeout_s, now))
    return or_(pending, and_(ForwardJob.state == IN_FLIGHT, lost))


def claim(
    session: Session,
    destination: str,
    node_id: str,
    *,
    limit: int,
    lease_s: float,
    now: datetime | None = None,
    claimant_timeout_s: float | None = None,
    any_pending: bool = False,
) -> list[ClaimedJob]:
    """Take up to ``limit`` due jobs of ``destination`` for ``node_id``, oldest due first.

    Due: ``pending`` with ``next_attempt_at`` reached (any ``pending`` job with
    ``any_pending``: the probe of a destination that is down), or ``in_flight`` whose
    claimant is gone: its lease expired (the worker hung) or, with
    ``claimant_timeout_s``, the claimant's heartbeat is older than that many seconds
    (its process died).  A job taken over keeps its attempts.
    """
    now = now or utcnow()
    due = _due(now, claimant_timeout_s, any_pending)
    candidates = session.scalars(
        select(ForwardJob.id)
        .where(ForwardJob.destination == destination, due)
        .order_by(ForwardJob.next_attempt_at, ForwardJob.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    if not candidates:
        return []
    previous = func.coalesce(ForwardJob.claimed_by, "?")
    ids = session.scalars(
        update(ForwardJob)
        .where(ForwardJob.id.in_(candidates), due)
        .values(
            state=IN_FLIGHT,
            claimed_by=node_id,
            lease_until=now + timedelta(seconds=lease_s),
            updated_at=now,
            last_error=case(
                (
                    and_(ForwardJob.state == IN_FLIGHT, ForwardJob.lease_until < now),
                    "taken over after the lease of " + previous + " expired",
                ),
                (
                    ForwardJob.state == IN_FLIGHT,
                    "taken over from " + previous + " (no heartbeat: its process is dead)",
                ),
                else_=ForwardJob.last_error,
            ),
        )
        .returning(ForwardJob.id)
        .execution_options(synchronize_session=False)
    ).all()
    if not ids:
        return []
    rows = session.execute(
        select(
            ForwardJob.id,
            ForwardJob.instance_id,
            ForwardJob.destination,
            ForwardJob.attempts,
            Instance.sop_class_uid,
            Instance.sop_instance_uid,
            Instance.transfer_syntax_uid,
            Instance.path,
            Instance.original_path,
        )
        .join(Instance, ForwardJob.instance_id == Instance.id)
        .where(ForwardJob.id.in_(ids))
        .order_by(ForwardJob.next_attempt_at, ForwardJob.id)
    ).all()
    return [ClaimedJob(*row) for row in rows]


def _held(job_ids: Sequence[int], node_id: str) -> Any:
    return and_(
        ForwardJob.id.in_(list(job_ids)),
        ForwardJob.state == IN_FLIGHT,
        ForwardJob.claimed_by == node_id,
    )


def renew(
    session: Session,
    job_ids: Sequence[int],
    node_id: str,
    lease_s: float,
    now: datetime | None = None,
) -> set[int]:
    """Extend the lease of jobs ``node_id`` still holds; return their ids."""
    if not job_ids:
        return set()
    now = now or utcnow()
    return set(
        session.scalars(
            update(ForwardJob)
            .where(_held(job_ids, node_id))
            .values(lease_until=now + timedelta(seconds=lease_s), updated_at=now)
            .returning(ForwardJob.id)
            .execution_options(synchronize_session=False)
        )
    )


def complete(
    session: Session, job_id: int, node_id: str, status: int, now: datetime | None = None
) -> bool:
    """The destination stored the instance (Success or warning): ``done``."""
    now = now or utcnow()
    result = session.execute(
        update(ForwardJob)
        .where(_held([job_id], node_id))
        .values(
            state=DONE,
            attempts=ForwardJob.attempts + 1,
            last_status=status,
            lease_until=None,
            done_at=now,
            updated_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    return bool(getattr(result, "rowcount", 0))


def backoff_s(
    attempts: int, initial_s: float, max_s: float, rng: random.Random | None = None
) -> float:
    """Delay in seconds before attempt ``attempts + 1``: exponential, capped, with jitter.

    ``initial * 2**(attempts-1)`` capped at ``max``, then drawn uniformly from its upper
    half ("equal jitter"), so retries of many jobs spread out instead of arriving together.
    The exponent is capped before the power is computed, so any attempt count (1025 and
    more) gives ``max`` instead of overflowing a float.
    """
    doublings = 0
    while doublings < max(0, attempts - 1) and initial_s * 2**doublings < max_s:
        doublings += 1
    base = min(max_s, initial_s * 2**doublings)
    return base / 2 + (rng or random).uniform(0, base / 2)


def _drop_pending_twins(session: Session, job_ids: Sequence[int]) -> None:
    """Before jobs go back to ``pending``: drop other pending jobs of the same instance and
    destination (a resend queued while they were in flight).  A job sends the instance's
    current file, so one pending job per instance and destination is enough, and two
    would deliver it twice."""
    twin = aliased(ForwardJob)
    session.execute(
        delete(ForwardJob)
        .where(
            ForwardJob.state == PENDING,
            ForwardJob.id.not_in(list(job_ids)),
            exists().where(
                twin.id.in_(list(job_ids)),
                twin.instance_id == ForwardJob.instance_id,
                twin.destination == ForwardJob.destination,
            ),
        )
        .execution_options(synchronize_session=False)
    )


def fail(
    session: Session,
    job_id: int,
    node_id: str,
    *,
    error: str,
    status: int | None = None,
    max_attempts: int,
    retry_initial_s: float,
    retry_max_s: float,
    rng: random.Random | None = None,
    now: datetime | None = None,
    reach_retention_s: float | None = None,
) -> str | None:
    """An attempt failed: back to ``pending`` after a backoff, or ``dead``.  Returns the
    new state (``None``: job not held).

    A refusal (``reach_retention_s`` ``None``: a failure status, an unreadable file) is
    ``dead`` once the job's refusals reach ``max_attempts``.  A failure of reach (no
    association, timeout, abort: ``reach_retention_s`` given) is ``dead`` only once the
    job is older than ``reach_retention_s`` seconds, however many attempts it took.
    """
    now = now or utcnow()
    # Locked first (see enqueue): a resend queued meanwhile is committed, and dropped below.
    job = session.get(ForwardJob, job_id, populate_existing=True, with_for_update=True)
    if job is None or job.state != IN_FLIGHT or job.claimed_by != node_id:
        return None
    job.attempts += 1
    job.last_status = status
    job.last_error = error[:MAX_ERROR_CHARS]
    job.lease_until = None
    job.updated_at = now
    if reach_retention_s is None:
        job.refusals += 1
        give_up = job.refusals >= max_attempts
        why = f"gave up after {job.attempts} attempts ({job.refusals} refused): {error}"
    else:
        age_s = (now - (as_utc(job.created_at) or now)).total_seconds()
        give_up = age_s > reach_retention_s
        why = f"unreachable for {age_s / 86400:.1f} days ({job.attempts} attempts): {error}"
    if give_up:
        job.state = DEAD
        job.last_error = why[:MAX_ERROR_CHARS]
    else:
        _drop_pending_twins(session, [job.id])
        job.state = PENDING
        delay = backoff_s(job.attempts, retry_initial_s, retry_max_s, rng)
        job.next_attempt_at = now + timedelta(seconds=delay)
    session.flush()
    return job.state


def bury(
    session: Session,
    job_id: int,
    node_id: str,
    reason: str,
    status: int | None = None,
    now: datetime | None = None,
) -> bool:
    """The job can never succeed as configured (no presentation context): ``dead``."""
    now = now or utcnow()
    result = session.execute(
        update(ForwardJob)
        .where(_held([job_id], node_id))
        .values(
            state=DEAD,
            attempts=ForwardJob.attempts + 1,
            last_status=status,
            last_error=reason[:MAX_ERROR_CHARS],
            lease_until=None,
            updated_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    return bool(getattr(result, "rowcount", 0))


def release(
    session: Session, job_ids: Sequence[int], node_id: str, now: datetime | None = None
) -> int:
    """Give held jobs back as ``pending`` and due, without counting an attempt (the node
    is stopping, or the association ended before their turn)."""
    if not job_ids:
        return 0
    now = now or utcnow()
    # The jobs first (it locks them, see enqueue), then their twins.
    result = session.execute(
        update(ForwardJob)
        .where(_held(job_ids, node_id))
        .values(state=PENDING, lease_until=None, next_attempt_at=now, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    _drop_pending_twins(session, job_ids)
    return int(getattr(result, "rowcount", 0))


def next_due(session: Session, destination: str) -> datetime | None:
    """When the next job of ``destination`` becomes claimable (``None``: no job waits)."""
    pending = session.scalar(
        select(func.min(ForwardJob.next_attempt_at)).where(
            ForwardJob.destination == destination, ForwardJob.state == PENDING
        )
    )
    lease = session.scalar(
        select(func.min(ForwardJob.lease_until)).where(
            ForwardJob.destination == destination, ForwardJob.state == IN_FLIGHT
        )
    )
    times = [t for t in (as_utc(pending), as_utc(lease)) if t is not None]
    return min(times) if times else None


def waiting(session: Session, destination: str) -> int:
    """Jobs of ``destination`` not yet delivered (``pending`` or ``in_flight``)."""
    return int(
        session.scalar(
            select(func.count(ForwardJob.id)).where(
                ForwardJob.destination == destination, ForwardJob.state.in_((PENDING, IN_FLIGHT))
            )
        )
        or 0
    )


# -- operator actions -----------------------------------------------------------------------


def retry(
    session: Session,
    *,
    destination: str | None = None,
    dead: bool = False,
    now: datetime | None = None,
) -> int:
    """Make waiting jobs due now; with ``dead``, revive dead jobs (attempts from zero)."""
    now = now or utcnow()
    query = update(ForwardJob).execution_options(synchronize_session=False)
    if destination:
        query = query.where(ForwardJob.destination == destination)
    if dead:
        query = query.where(ForwardJob.state == DEAD).values(
            state=PENDING,
            attempts=0,
            refusals=0,
            next_attempt_at=now,
            claimed_by=None,
            updated_at=now,
        )
    else:
        query = query.where(ForwardJob.state == PENDING, ForwardJob.next_attempt_at > now).values(
            next_attempt_at=now, updated_at=now
        )
    return int(getattr(session.execute(query), "rowcount", 0))


def requeue_series(
    session: Session, series_instance_uid: str, destination: str, now: datetime | None = None
) -> int | None:
    """Queue every instance of a series for ``destination`` again (filters not applied).

    Returns how many instances were queued (an instance with a pending job is made due
    now instead), ``None`` if the series is unknown.
    """
    now = now or utcnow()
    series_id = session.scalar(
        select(Series.id).where(Series.series_instance_uid == series_instance_uid)
    )
    if series_id is None:
        return None
    ids = session.scalars(select(Instance.id).where(Instance.series_id == series_id)).all()
    for instance_id in ids:
        enqueue(session, instance_id, [destination], now)
    if ids:
        session.execute(
            update(ForwardJob)
            .where(
                ForwardJob.instance_id.in_(ids),
                ForwardJob.destination == destination,
                ForwardJob.state == PENDING,
            )
            .values(next_attempt_at=now, updated_at=now)
            .execution_options(synchronize_session=False)
        )
    return len(ids)


# -- reading --------------------------------------------------------------------------------


def summary(
    session: Session, destinations: Iterable[str] = (), now: datetime | None = None
) -> list[dict[str, Any]]:
    """Per destination: jobs by state, the age of the oldest undelivered job, last error.

    ``destinations`` (the configured ones) are listed even without jobs; destinations
    that only the database knows (removed from the configuration) are listed too.
    """
    now = now or utcnow()
    out: dict[str, dict[str, Any]] = {}

    def entry(name: str) -> dict[str, Any]:
        if name not in out:
            out[name] = {
                "destination": name,
                "counts": dict.fromkeys(STATES, 0),
                "oldest_pending_age_s": None,
                "last_error": None,
            }
        return out[name]

    for name in destinations:
        entry(name)
    for name, state, count in session.execute(
        select(ForwardJob.destination, ForwardJob.state, func.count(ForwardJob.id)).group_by(
            ForwardJob.destination, ForwardJob.state
        )
    ):
        entry(name)["counts"][state] = int(count)
    for name, oldest in session.execute(
        select(ForwardJob.destination, func.min(ForwardJob.created_at))
        .where(ForwardJob.state.in_((PENDING, IN_FLIGHT)))
        .group_by(ForwardJob.destination)
    ):
        created = as_utc(oldest)
        if created is not None:
            entry(name)["oldest_pending_age_s"] = round(
                max(0.0, (now - created).total_seconds()), 3
            )
    for name in list(out):
        row = session.execute(
            select(ForwardJob.id, ForwardJob.state, ForwardJob.last_error, ForwardJob.updated_at)
            .where(ForwardJob.destination == name, ForwardJob.last_error.is_not(None))
            .order_by(ForwardJob.updated_at.desc(), ForwardJob.id.desc())
            .limit(1)
        ).first()
        if row is not None:
            out[name]["last_error"] = {
                "job_id": row[0],
                "state": row[1],
                "message": row[2],
                "at": iso(row[3]),
            }
    return [out[name] for name in sorted(out)]


def depth(session: Session) -> dict[tuple[str, str], int]:
    """Job counts by (destination, state), for the queue-depth gauges."""
    return {
        (name, state): int(count)
        for name, state, count in session.execute(
            select(ForwardJob.destination, ForwardJob.state, func.count(ForwardJob.id)).group_by(
                ForwardJob.destination, ForwardJob.state
            )
        )
    }
