"""The index routes: ``/health``, ``/series``, ``/series/{uid}``, ``/series/{uid}/instances``,
``/instances/{uid}``, ``/devices``, ``/metrics``.

The routes return the dicts of :mod:`storage.queries`; FastAPI validates each against its
``response_model`` (:mod:`scp.models`), so an answer that drifts from the documented shape
is a 500, never a silent change.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from fastapi.responses import JSONResponse, PlainTextResponse
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from scp import __version__
from scp import models as m
from scp.api.openapi import problem_responses
from scp.api.params import PageQuery, SeriesQuery
from scp.metrics import METRICS
from scp.pipeline.policy import SwapRule
from scp.services.devices import list_devices
from scp.services.series_query import IndexQueries
from storage.models import Instance, Series, Study

#: Media type of the Prometheus text exposition format 0.0.4.
PROMETHEUS_TEXT = "text/plain; version=0.0.4"


class PrometheusText(PlainTextResponse):
    """``/metrics``: the exposition format's media type (also in the OpenAPI document)."""

    media_type = PROMETHEUS_TEXT


SeriesUID = Annotated[str, Path(description="Series Instance UID (0020,000E)")]
SOPInstanceUID = Annotated[str, Path(description="SOP Instance UID (0008,0018)")]


def health_router(sessions: sessionmaker[Session], ae_title: str) -> APIRouter:
    """``GET /health``: open (no token), for load balancers."""
    router = APIRouter()

    @router.get(
        "/health",
        response_model=m.Health,
        summary="Liveness and index reachability",
        responses={503: {"model": m.Health, "description": "the index is unreachable"}},
    )
    def health() -> Any:
        try:
            with sessions() as session:
                session.execute(select(1))
        except Exception as exc:
            down = m.Health(
                status="error", ae_title=ae_title, version=__version__, detail=type(exc).__name__
            )
            return JSONResponse(down.model_dump(), status_code=503)
        return m.Health(status="ok", ae_title=ae_title, version=__version__, detail=None)

    return router


def index_router(
    sessions: sessionmaker[Session],
    queries: IndexQueries,
    gauges: Callable[[], dict[str, float]] | None = None,
) -> APIRouter:
    """The series, instances and metrics routes over ``queries``; ``gauges`` adds the
    forwarder's queue gauges to ``/metrics``."""
    router = APIRouter(responses=problem_responses(401, 500))

    @router.get(
        "/series",
        response_model=m.SeriesPage,
        summary="Series, newest first",
        responses=problem_responses(400),
    )
    def series_list(q: Annotated[SeriesQuery, Query()]) -> Any:
        with sessions() as session:
            items, nxt = queries.list_series(
                session,
                study_instance_uid=q.study_instance_uid,
                modality=q.modality,
                code=q.code,
                state=q.state,
                limit=q.limit,
                cursor=q.cursor,
            )
        return {"items": items, "next": nxt}

    @router.get(
        "/series/{uid}",
        response_model=m.Series,
        summary="One series",
        responses=problem_responses(404),
    )
    def series_one(uid: SeriesUID) -> Any:
        with sessions() as session:
            return queries.get_series(session, uid)

    @router.get(
        "/series/{uid}/instances",
        response_model=m.InstancePage,
        summary="Instances of a series, in the order received",
        responses=problem_responses(400, 404),
    )
    def series_instances(uid: SeriesUID, q: Annotated[PageQuery, Query()]) -> Any:
        with sessions() as session:
            items, nxt = queries.list_instances(session, uid, limit=q.limit, cursor=q.cursor)
        return {"items": items, "next": nxt}

    @router.get(
        "/instances/{uid}",
        response_model=m.Instance,
        summary="One instance",
        responses=problem_responses(404),
    )
    def instance_one(uid: SOPInstanceUID) -> Any:
        with sessions() as session:
            return queries.get_instance(session, uid)

    @router.get(
        "/metrics",
        response_class=PrometheusText,
        summary="Prometheus metrics (text exposition format 0.0.4)",
        responses={200: {"content": {PROMETHEUS_TEXT: {"schema": {"type": "string"}}}}},
    )
    def metrics() -> PrometheusText:
        with sessions() as session:
            values = {
                f"spacing_scp_index_{name}": float(session.scalar(select(func.count(col))) or 0)
                for name, col in (
                    ("studies", Study.id),
                    ("series", Series.id),
                    ("instances", Instance.id),
                )
            }
        if gauges is not None:
            values.update(gauges())
        return PrometheusText(METRICS.render(values))

    return router


def devices_router(sessions: sessionmaker[Session], swap_rules: Sequence[SwapRule]) -> APIRouter:
    """``GET /devices``: the sending devices of the fleet (:mod:`scp.services.devices`)."""
    router = APIRouter(responses=problem_responses(401, 500))
    rules = list(swap_rules)

    @router.get(
        "/devices",
        response_model=m.DevicePage,
        summary="Sending devices: what they sent, how often flagged, proposed swap rules",
    )
    def devices() -> Any:
        with sessions() as session:
            return {"items": list_devices(session, rules)}

    return router
