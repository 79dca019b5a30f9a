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
from scp.services.retention import Level, Retention, Undelivered, deletions_page

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
            return done.as_dict()

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
