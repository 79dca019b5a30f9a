"""Listing forward jobs (the outbox of :mod:`storage.outbox`): one job as a dict, pages of
jobs newest first.  Read-only; takes the caller's session."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from storage.models import ForwardJob, Instance, Series
from storage.outbox import STATES, iso
from storage.queries import BadQuery, decode_cursor, encode_cursor


def job_dict(job: ForwardJob, inst: Instance, series_uid: str) -> dict[str, Any]:
    return {
        "id": job.id,
        "destination": job.destination,
        "state": job.state,
        "attempts": job.attempts,
        "sop_instance_uid": inst.sop_instance_uid,
        "series_instance_uid": series_uid,
        "sop_class_uid": inst.sop_class_uid,
        "transfer_syntax_uid": inst.transfer_syntax_uid,
        "next_attempt_at": iso(job.next_attempt_at),
        "lease_until": iso(job.lease_until),
        "claimed_by": job.claimed_by,
        "last_status": job.last_status,
        "last_status_hex": None if job.last_status is None else f"0x{job.last_status:04X}",
        "last_error": job.last_error,
        "created_at": iso(job.created_at),
        "updated_at": iso(job.updated_at),
        "done_at": iso(job.done_at),
    }


def list_jobs(
    session: Session,
    *,
    state: str | None = None,
    destination: str | None = None,
    series_instance_uid: str | None = None,
    limit: int = 100,
    cursor: str | None = None,
) -> tuple[list[dict[str, Any]], str | None]:
    """Jobs, newest first, a keyset page (cursor on the job id) at a time."""
    if state and state not in STATES:
        raise BadQuery(f"state must be one of {', '.join(STATES)}")
    query = (
        select(ForwardJob, Instance, Series.series_instance_uid)
        .join(Instance, ForwardJob.instance_id == Instance.id)
        .join(Series, Instance.series_id == Series.id)
    )
    if state:
        query = query.where(ForwardJob.state == state)
    if destination:
        query = query.where(ForwardJob.destination == destination)
    if series_instance_uid:
        query = query.where(Series.series_instance_uid == series_instance_uid)
    if cursor:
        query = query.where(ForwardJob.id < decode_cursor(cursor))
    rows = session.execute(query.order_by(ForwardJob.id.desc()).limit(limit + 1)).all()
    page = rows[:limit]
    items = [job_dict(job, inst, uid) for job, inst, uid in page]
    return items, (encode_cursor(page[-1][0].id) if len(rows) > limit else None)
