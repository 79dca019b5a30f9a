"""Deletion over HTTP (issue 20): ``DELETE /studies/{uid}``, ``/series/{uid}``,
``/instances/{uid}`` and ``GET /deletions``.

A deletion needs the bearer token: without ``[http] token`` the node answers 403 (nobody
could be told apart).  Instances a destination has not confirmed are refused with 409
unless ``?force=true``; every deletion is recorded with the reason given and ``http`` (the
token holder) as who asked.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from sqlalchemy.orm import Session, sessionmaker

from scp import models as m
from scp.api.openapi import problem_responses
from scp.api.params import DeleteQuery, DeletionsQuery
from scp.api.problems import problem
from scp.services.retention import Level, Retention, Undelivered
from storage import retention as r
from storage.outbox import iso
from storage.queries import BadQuery

ACTOR = "http"
_PATHS: dict[Level, str] = {
    "study": "/studies/{uid}",
    "series": "/series/{uid}",
    "instance": "/instances/{uid}",
}
UID = Annotated[
    str,
    Path(
        description="Study Instance UID (0020,000D), Series Instance UID (0020,000E) or SOP "
        "Instance UID (0008,0018), as the path says"
    ),
]


def deletion_dict(row: Any) -> dict[str, Any]:
    """A ``deletions`` row as :class:`scp.models.Deletion` fields."""
    return {
        "id": row.id,
        "deleted_at": iso(row.deleted_at),
        "level": row.level,
        "study_instance_uid": row.study_instance_uid,
        "series_instance_uid": row.series_instance_uid,
        "sop_instance_uid": row.sop_instance_uid,
        "instances": row.instances,
        "bytes": row.bytes,
        "reason": row.reason,
        "actor": row.actor,
        "forced": bool(row.forced),
        "comment": row.comment,
    }


def deletions_page(
    session: Session, limit: int, cursor: str | None
) -> tuple[list[dict[str, Any]], str | None]:
    """One page of deletions, newest first; :class:`BadQuery` for a cursor not ours."""
    before = None
    if cursor is not None:
        if not cursor.isascii() or not cursor.isdigit():
            raise BadQuery(f"cursor {cursor!r} was not issued by this API")
        before = int(cursor)
    rows = r.list_deletions(session, limit=limit + 1, before_id=before)
    items = [deletion_dict(row) for row in rows[:limit]]
    return items, str(rows[limit - 1].id) if len(rows) > limit else None


def retention_router(
    sessions: sessionmaker[Session], retention: Retention, token: str
) -> APIRouter:
    """The deletion routes over ``retention``; ``token``: ``[http] token`` (empty: 403)."""
    router = APIRouter(responses=problem_responses(401, 500))

    def add_delete(level: Level) -> None:
        path = _PATHS[level]

        @router.delete(
            path,
            response_model=m.DeletionResult,
            summary=f"Delete a {level} from the index and the store",
            responses=problem_responses(400, 403, 404, 409),
            name=f"delete_{level}",
        )
        def delete(uid: UID, q: Annotated[DeleteQuery, Query()]) -> Any:
            if not token:
                return problem(403, "deleting over HTTP needs [http] token to be set")
            try:
                done = retention.delete(
                    level, uid, actor=ACTOR, force=q.force, reason=q.reason or None
                )
            except Undelivered as exc:
                return problem(409, str(exc))
            return {
                "level": done.level,
                "uid": done.uid,
                "instances": done.instances,
                "bytes": done.bytes,
                "forced": done.forced,
                "deletion_ids": done.deletion_ids,
            }

    for level in _PATHS:
        add_delete(level)

    @router.get(
        "/deletions",
        response_model=m.DeletionPage,
        summary="Deletions by retention and by hand, newest first",
        responses=problem_responses(400),
    )
    def deletions(q: Annotated[DeletionsQuery, Query()]) -> Any:
        with sessions() as session:
            items, nxt = deletions_page(session, q.limit, q.cursor)
        return {"items": items, "next": nxt}

    return router
