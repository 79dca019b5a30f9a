"""HTTP views of the outbox: ``GET /forwarding`` and ``GET /forwarding/jobs``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

from fastapi import APIRouter, Query
from sqlalchemy.orm import Session, sessionmaker

from scp import models as m
from scp.api.openapi import problem_responses
from scp.api.params import JobsQuery
from storage import outbox, outbox_jobs


def forwarding_router(sessions: sessionmaker[Session], destinations: Sequence[str]) -> APIRouter:
    """The outbox routes; ``destinations`` (the configured ones) are listed even while idle."""
    names = list(destinations)
    router = APIRouter(responses=problem_responses(401, 500))

    @router.get(
        "/forwarding",
        response_model=m.ForwardingStatus,
        summary="Forwarding queue per destination: jobs by state, oldest, last error",
    )
    def forwarding() -> Any:
        with sessions() as session:
            return {"destinations": outbox.summary(session, names)}

    @router.get(
        "/forwarding/jobs",
        response_model=m.ForwardJobPage,
        summary="Forwarding jobs, newest first",
        responses=problem_responses(400),
    )
    def forwarding_jobs(q: Annotated[JobsQuery, Query()]) -> Any:
        with sessions() as session:
            items, nxt = outbox_jobs.list_jobs(
                session,
                state=q.state,
                destination=q.destination,
                series_instance_uid=q.series_instance_uid,
                limit=q.limit,
                cursor=q.cursor,
            )
        return {"items": items, "next": nxt}

    return router
