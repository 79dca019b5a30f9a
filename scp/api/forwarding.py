"""HTTP views of the outbox: ``GET /forwarding`` and ``GET /forwarding/jobs``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from scp.api.routes import OPENAPI
from scp.api.server import Request, Response, Router
from storage import outbox
from storage.queries import parse_limit

_TIME = {"type": ["string", "null"], "format": "date-time"}

SCHEMAS: dict[str, Any] = {
    "ForwardingDestination": {
        "type": "object",
        "required": ["destination", "counts", "oldest_pending_age_s", "last_error"],
        "properties": {
            "destination": {"type": "string"},
            "counts": {
                "type": "object",
                "properties": {state: {"type": "integer"} for state in outbox.STATES},
            },
            "oldest_pending_age_s": {
                "type": ["number", "null"],
                "description": "age of the oldest job not yet delivered (pending or in_flight)",
            },
            "last_error": {
                "type": ["object", "null"],
                "properties": {
                    "job_id": {"type": "integer"},
                    "state": {"enum": list(outbox.STATES)},
                    "message": {"type": "string"},
                    "at": _TIME,
                },
            },
        },
    },
    "ForwardJob": {
        "type": "object",
        "required": ["id", "destination", "state", "attempts", "sop_instance_uid"],
        "properties": {
            "id": {"type": "integer"},
            "destination": {"type": "string"},
            "state": {"enum": list(outbox.STATES)},
            "attempts": {"type": "integer"},
            "sop_instance_uid": {"type": "string"},
            "series_instance_uid": {"type": "string"},
            "sop_class_uid": {"type": "string"},
            "transfer_syntax_uid": {"type": "string"},
            "next_attempt_at": _TIME,
            "lease_until": _TIME,
            "claimed_by": {"type": ["string", "null"]},
            "last_status": {
                "type": ["integer", "null"],
                "description": "last C-STORE status the destination answered (PS3.4 B.2.3)",
            },
            "last_status_hex": {"type": ["string", "null"]},
            "last_error": {"type": ["string", "null"]},
            "created_at": _TIME,
            "updated_at": _TIME,
            "done_at": _TIME,
        },
    },
}


def _param(name: str, desc: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": desc,
        "schema": schema or {"type": "string"},
    }


def _ok(schema: dict[str, Any]) -> dict[str, Any]:
    problem = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
    return {
        "200": {"description": "OK", "content": {"application/json": {"schema": schema}}},
        "400": {"description": "Bad parameter", "content": problem},
        "401": {"description": "Bearer token missing or wrong", "content": problem},
    }


PATHS: dict[str, Any] = {
    "/forwarding": {
        "get": {
            "summary": "Forwarding queue per destination: jobs by state, oldest, last error",
            "responses": _ok(
                {
                    "type": "object",
                    "required": ["destinations"],
                    "properties": {
                        "destinations": {
                            "type": "array",
                            "items": {"$ref": "#/components/schemas/ForwardingDestination"},
                        }
                    },
                }
            ),
        }
    },
    "/forwarding/jobs": {
        "get": {
            "summary": "Forwarding jobs, newest first",
            "parameters": [
                _param("state", "only jobs in this state", {"enum": list(outbox.STATES)}),
                _param("destination", "only jobs of this destination"),
                _param("series_instance_uid", "only jobs of this series"),
                _param(
                    "limit",
                    "page size, 1-1000 (default 100)",
                    {"type": "integer", "minimum": 1, "maximum": 1000},
                ),
                _param("cursor", "the `next` value of the previous page"),
            ],
            "responses": _ok(
                {
                    "type": "object",
                    "required": ["items", "next"],
                    "properties": {
                        "items": {
                            "type": "array",
                            "items": {"$ref": "#/components/schemas/ForwardJob"},
                        },
                        "next": {"type": ["string", "null"]},
                    },
                }
            ),
        }
    },
}


def document(openapi: dict[str, Any]) -> None:
    """Add the forwarding paths and schemas to an OpenAPI document (idempotent)."""
    openapi["paths"].update(PATHS)
    openapi["components"]["schemas"].update(SCHEMAS)


def add_forward_routes(
    router: Router, sessions: sessionmaker[Session], destinations: Sequence[str]
) -> None:
    """Serve the outbox on ``router``; ``destinations`` are listed even while idle."""
    names = list(destinations)

    @router.get("/forwarding")
    def forwarding(_req: Request) -> Response:
        with sessions() as session:
            return Response({"destinations": outbox.summary(session, names)})

    @router.get("/forwarding/jobs")
    def forwarding_jobs(req: Request) -> Response:
        p = req.params
        unknown = set(p) - {"state", "destination", "series_instance_uid", "limit", "cursor"}
        if unknown:
            raise ValueError(f"unknown parameter {sorted(unknown)[0]!r}")
        limit = parse_limit(p.get("limit"))
        with sessions() as session:
            items, nxt = outbox.list_jobs(
                session,
                state=p.get("state") or None,
                destination=p.get("destination") or None,
                series_instance_uid=p.get("series_instance_uid") or None,
                limit=limit,
                cursor=p.get("cursor") or None,
            )
        return Response({"items": items, "next": nxt})

    document(OPENAPI)
