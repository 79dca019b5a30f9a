"""The HTTP API as one FastAPI application (served by :class:`scp.api.server.ApiServer`)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from fastapi import FastAPI
from sqlalchemy.orm import Session, sessionmaker

from scp.api.dicomweb import dicomweb_router
from scp.api.forwarding import forwarding_router
from scp.api.freshness import ReadYourWrites
from scp.api.guard import Guard
from scp.api.openapi import DESCRIPTION, TITLE, openapi_document
from scp.api.problems import install_problem_handlers
from scp.api.retention import retention_router
from scp.api.routes import devices_router, health_router, index_router
from scp.api.ui import UiAuth, UiContext, ui_router
from scp.pipeline.policy import SwapRule
from scp.services.dicomweb import DicomWeb
from scp.services.retention import Retention
from scp.services.series_query import IndexQueries
from storage.filestore import FileStore


def build_app(
    sessions: sessionmaker[Session],
    queries: IndexQueries,
    ae_title: str,
    *,
    token: str = "",
    gauges: Callable[[], dict[str, float]] | None = None,
    destinations: Sequence[str] = (),
    data_dir: Path | None = None,
    swap_rules: Sequence[SwapRule] = (),
    associations: Callable[[], int] | None = None,
    index_gauges: Callable[[], dict[str, float]] | None = None,
    wake: Callable[[Iterable[str] | None], None] | None = None,
    dicomweb: DicomWeb | None = None,
    visibility: Callable[[], bool] | None = None,
    retention: Retention | None = None,
) -> FastAPI:
    """The read-only API over the index of ``sessions``.

    ``token``: the bearer token every path but ``/health`` requires (empty: none);
    ``gauges``: extra ``/metrics`` values (the forwarder's); ``destinations``: the
    configured forwarding destinations, listed by ``/forwarding`` even while idle;
    ``swap_rules``: the configured ``[[swap_rules]]`` (``/devices`` proposes none for a
    device they cover). With ``data_dir`` (the file store) the web page is served at
    ``/ui`` (:mod:`scp.api.ui`): ``associations`` counts the running associations, ``wake``
    wakes the forwarding workers of the named destinations after an operator's action.
    ``dicomweb``: the DICOMweb services served under ``/dicom-web`` (none: not served).
    ``visibility``: read-your-writes (:mod:`scp.api.freshness`), ``None`` when the node
    indexes before it answers.
    ``retention``: deletions over HTTP (``DELETE /studies|series|instances/{uid}``,
    ``GET /deletions``; none: not served).
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
    app.include_router(devices_router(sessions, swap_rules))
    if retention is not None:
        app.include_router(retention_router(sessions, retention, token))
    if data_dir is not None:
        ui = UiContext(
            sessions=sessions,
            queries=queries,
            store=FileStore(data_dir),
            ae_title=ae_title,
            auth=UiAuth(token),
            destinations=list(destinations),
            swap_rules=list(swap_rules),
            associations=associations,
            index_gauges=index_gauges,
            wake=wake,
            retention=retention,
        )
        app.include_router(ui_router(ui))
    if dicomweb is not None:
        app.include_router(dicomweb_router(dicomweb))
    install_problem_handlers(app)
    if visibility is not None:
        app.add_middleware(ReadYourWrites, wait=visibility)
    app.add_middleware(Guard, token=token)
    app.openapi = lambda: openapi_document(app)  # type: ignore[method-assign]
    return app
