"""Routes of the HTTP API (read-only), documented by :data:`OPENAPI`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from scp import __version__
from scp.api.server import Problem, Request, Response, Router
from scp.metrics import METRICS
from scp.services.series_query import IndexQueries
from storage.models import Instance, Series, Study
from storage.queries import NotFound, parse_limit


def build_router(
    sessions: sessionmaker[Session],
    queries: IndexQueries,
    ae_title: str,
    gauges: Callable[[], dict[str, float]] | None = None,
) -> Router:
    router = Router()

    def run(fn: Callable[[Session], Any]) -> Any:
        with sessions() as session:
            try:
                return fn(session)
            except NotFound as exc:
                raise Problem(404, "Not Found", str(exc)) from None

    @router.get("/health")
    def health(_req: Request) -> Response:
        def check(session: Session) -> dict[str, Any]:
            session.execute(select(1))
            return {"status": "ok", "ae_title": ae_title, "version": __version__}

        try:
            return Response(run(check))
        except Problem:
            raise
        except Exception as exc:
            return Response({"status": "error", "detail": type(exc).__name__}, 503)

    @router.get("/series")
    def series_list(req: Request) -> Response:
        p = req.params
        unknown = set(p) - {"study_instance_uid", "modality", "code", "state", "limit", "cursor"}
        if unknown:
            raise ValueError(f"unknown parameter {sorted(unknown)[0]!r}")
        limit = parse_limit(p.get("limit"))
        items, nxt = run(
            lambda s: queries.list_series(
                s,
                study_instance_uid=p.get("study_instance_uid") or None,
                modality=p.get("modality") or None,
                code=p.get("code") or None,
                state=p.get("state") or None,
                limit=limit,
                cursor=p.get("cursor") or None,
            )
        )
        return Response({"items": items, "next": nxt})

    @router.get("/series/{uid}")
    def series_one(req: Request) -> Response:
        return Response(run(lambda s: queries.get_series(s, req.match["uid"])))

    @router.get("/series/{uid}/instances")
    def series_instances(req: Request) -> Response:
        p = req.params
        unknown = set(p) - {"limit", "cursor"}
        if unknown:
            raise ValueError(f"unknown parameter {sorted(unknown)[0]!r}")
        limit = parse_limit(p.get("limit"))
        items, nxt = run(
            lambda s: queries.list_instances(
                s, req.match["uid"], limit=limit, cursor=p.get("cursor") or None
            )
        )
        return Response({"items": items, "next": nxt})

    @router.get("/instances/{uid}")
    def instance_one(req: Request) -> Response:
        return Response(run(lambda s: queries.get_instance(s, req.match["uid"])))

    @router.get("/metrics")
    def metrics(_req: Request) -> Response:
        def counts(session: Session) -> dict[str, float]:
            return {
                "spacing_scp_index_studies": float(
                    session.scalar(select(func.count(Study.id))) or 0
                ),
                "spacing_scp_index_series": float(
                    session.scalar(select(func.count(Series.id))) or 0
                ),
                "spacing_scp_index_instances": float(
                    session.scalar(select(func.count(Instance.id))) or 0
                ),
            }

        values = run(counts)
        if gauges is not None:
            values.update(gauges())
        return Response(METRICS.render(values), content_type="text/plain; version=0.0.4")

    @router.get("/openapi.json")
    def openapi(_req: Request) -> Response:
        return Response(OPENAPI)

    return router


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


_PROBLEM = {"application/problem+json": {"schema": _ref("Problem")}}
_NUM = {"type": ["number", "null"]}
_FINDING = {
    "type": "object",
    "required": ["code", "severity", "message"],
    "properties": {
        "code": {"type": "string"},
        "severity": {"enum": ["invalid", "warning", "corrected", "info"]},
        "count": {"type": "integer"},
        "message": {"type": "string"},
    },
}


def _page(item: str) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["items", "next"],
        "properties": {
            "items": {"type": "array", "items": _ref(item)},
            "next": {"type": ["string", "null"]},
        },
    }


def _ok(schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "200": {"description": "OK", "content": {"application/json": {"schema": schema}}},
        "400": {"description": "Bad parameter", "content": _PROBLEM},
        "401": {"description": "Bearer token missing or wrong", "content": _PROBLEM},
        "404": {"description": "Unknown UID", "content": _PROBLEM},
    }


def _param(name: str, desc: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": desc,
        "schema": schema or {"type": "string"},
    }


_UID_PATH = {"name": "uid", "in": "path", "required": True, "schema": {"type": "string"}}
_PAGING = [
    _param(
        "limit",
        "page size, 1-1000 (default 100)",
        {"type": "integer", "minimum": 1, "maximum": 1000},
    ),
    _param("cursor", "the `next` value of the previous page"),
]

OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "spacing-scp index API",
        "version": __version__,
        "description": "Read-only view of the per-series spacing index. Errors are RFC 9457 "
        "problem bodies. When [http] token is set, send `Authorization: Bearer TOKEN`.",
    },
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        "schemas": {
            "Problem": {
                "type": "object",
                "properties": {
                    "type": {"type": "string"},
                    "title": {"type": "string"},
                    "status": {"type": "integer"},
                    "detail": {"type": "string"},
                },
            },
            "Finding": _FINDING,
            "Series": {
                "type": "object",
                "required": [
                    "series_instance_uid",
                    "study_instance_uid",
                    "instance_count",
                    "state",
                    "pixel_spacing",
                    "slice_spacing",
                    "findings",
                ],
                "properties": {
                    "series_instance_uid": {"type": "string"},
                    "study_instance_uid": {"type": "string"},
                    "modality": {"type": ["string", "null"]},
                    "instance_count": {"type": "integer"},
                    "state": {"enum": ["receiving", "settled"]},
                    "pixel_spacing": {
                        "type": "object",
                        "properties": {
                            "row_mm": _NUM,
                            "column_mm": _NUM,
                            "source": {"type": ["string", "null"]},
                            "consistent": {"type": "boolean"},
                        },
                    },
                    "slice_spacing": {
                        "type": "object",
                        "properties": {
                            "mm": _NUM,
                            "min_mm": _NUM,
                            "max_mm": _NUM,
                            "uniform": {"type": ["boolean", "null"]},
                            "missing_slices": {"type": ["integer", "null"]},
                            "tilt_degrees": _NUM,
                            "provisional": {"type": "boolean"},
                        },
                    },
                    "slice_thickness_mm": _NUM,
                    "spacing_between_slices_mm": _NUM,
                    "corrected_instances": {"type": "integer"},
                    "findings": {"type": "array", "items": _ref("Finding")},
                },
            },
            "Instance": {
                "type": "object",
                "required": [
                    "sop_instance_uid",
                    "series_instance_uid",
                    "status",
                    "pixel_spacing",
                    "findings",
                    "actions",
                ],
                "properties": {
                    "sop_instance_uid": {"type": "string"},
                    "series_instance_uid": {"type": "string"},
                    "sop_class_uid": {"type": "string"},
                    "transfer_syntax_uid": {"type": "string"},
                    "calling_ae_title": {"type": "string"},
                    "received_at": {"type": "string", "format": "date-time"},
                    "status": {"type": "integer", "description": "DIMSE status sent"},
                    "received_pixel_spacing": {"type": ["string", "null"]},
                    "pixel_spacing": {"type": "object"},
                    "findings": {"type": "array", "items": _ref("Finding")},
                    "actions": {"type": "array", "items": {"type": "object"}},
                },
            },
        },
    },
    "security": [{"bearer": []}],
    "paths": {
        "/health": {
            "get": {
                "security": [],
                "summary": "Liveness and index reachability",
                "responses": {"200": {"description": "OK"}},
            }
        },
        "/series": {
            "get": {
                "summary": "Series, newest first",
                "parameters": [
                    _param("study_instance_uid", "only this study"),
                    _param("modality", "only this Modality (0008,0060)"),
                    _param("code", "only series with this finding code"),
                    _param("state", "receiving or settled", {"enum": ["receiving", "settled"]}),
                    *_PAGING,
                ],
                "responses": _ok(_page("Series")),
            }
        },
        "/series/{uid}": {
            "get": {
                "summary": "One series",
                "parameters": [_UID_PATH],
                "responses": _ok(_ref("Series")),
            }
        },
        "/series/{uid}/instances": {
            "get": {
                "summary": "Instances of a series",
                "parameters": [_UID_PATH, *_PAGING],
                "responses": _ok(_page("Instance")),
            }
        },
        "/instances/{uid}": {
            "get": {
                "summary": "One instance",
                "parameters": [_UID_PATH],
                "responses": _ok(_ref("Instance")),
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics",
                "responses": {"200": {"description": "text exposition"}},
            }
        },
        "/openapi.json": {
            "get": {
                "summary": "This document",
                "responses": {"200": {"description": "OpenAPI 3.1"}},
            }
        },
    },
}
