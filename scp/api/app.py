"""The HTTP API as one FastAPI application (served by :class:`scp.api.server.ApiServer`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from fastapi import FastAPI
from sqlalchemy.orm import Session, sessionmaker

from scp.api.forwarding import forwarding_router
from scp.api.freshness import ReadYourWrites
from scp.api.guard import Guard
from scp.api.openapi import DESCRIPTION, TITLE, openapi_document
from scp.api.problems import install_problem_handlers
from scp.api.routes import health_router, index_router
from scp.services.series_query import IndexQueries


def build_app(
    sessions: sessionmaker[Session],
    queries: IndexQueries,
    ae_title: str,
    *,
    token: str = "",
    gauges: Callable[[], dict[str, float]] | None = None,
    destinations: Sequence[str] = (),
    visibility: Callable[[], bool] | None = None,
) -> FastAPI:
    """The read-only API over the index of ``sessions``.

    ``token``: the bearer token every path but ``/health`` requires (empty: none);
    ``gauges``: extra ``/metrics`` values (the forwarder's); ``destinations``: the
    configured forwarding destinations, listed by ``/forwarding`` even while idle;
    ``visibility``: read-your-writes (:mod:`scp.api.freshness`), ``None`` when the node
    indexes before it answers.
    ``/openapi.json`` is generated (:mod:`scp.api.openapi`); no docs UI is served.
    """
    app = FastAPI(
        title=TITLE,
        description=DESCRIPTION,
        openapi_url="/openapi.json",
        docs_url=None,
        redoc_url=None,
        redirect_slashes=False,
    )
    app.include_router(health_router(sessions, ae_title))
    app.include_router(index_router(sessions, queries, gauges))
    app.include_router(forwarding_router(sessions, destinations))
    install_problem_handlers(app)
    if visibility is not None:
        app.add_middleware(ReadYourWrites, wait=visibility)
    app.add_middleware(Guard, token=token)
    app.openapi = lambda: openapi_document(app)  # type: ignore[method-assign]
    return app
