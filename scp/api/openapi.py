"""The OpenAPI 3.1 document (``GET /openapi.json``), generated from the routes and the
response models of :mod:`scp.models`.

FastAPI writes it; three things are added to what it knows: the bearer scheme of
:mod:`scp.api.guard` (every path but ``/health``), problem bodies as
``application/problem+json``, and invalid parameters as 400 problems (FastAPI's 422
``HTTPValidationError`` never happens here: :mod:`scp.api.problems` answers 400).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from scp import __version__
from scp.api.guard import OPEN_PATHS
from scp.api.problems import MEDIA_TYPE
from scp.models import Problem

TITLE = "spacing-scp index API"
DESCRIPTION = (
    "Read-only view of the node's index: per-series pixel and slice spacing, instances, the "
    "forwarding queue; DICOMweb (QIDO-RS, WADO-RS, STOW-RS, PS3.18) under /dicom-web. "
    "Errors are RFC 9457 problem bodies. When [http] token is set, send "
    "`Authorization: Bearer TOKEN` (not needed for /health)."
)

_WHY = {
    400: "a bad parameter: unknown, out of range, or a cursor this API did not issue",
    401: "bearer token missing or wrong",
    403: "deleting over HTTP needs [http] token to be set",
    404: "no such UID",
    409: "a destination has not confirmed an instance yet (repeat with force=true)",
    406: "no representation the Accept header allows (the node does not transcode)",
    413: "a part is larger than [node] max_instance_bytes",
    415: 'not multipart/related; type="application/dicom"',
    500: "internal error (never with detail)",
}
_PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` of a route: a problem body for each of ``statuses``."""
    return {status: {"model": Problem, "description": _WHY[status]} for status in statuses}


def openapi_document(app: FastAPI) -> dict[str, Any]:
    """The document of ``app``, built once."""
    if app.openapi_schema is not None:
        return app.openapi_schema
    doc = get_openapi(title=TITLE, version=__version__, description=DESCRIPTION, routes=app.routes)
    components = doc.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    components["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
    doc["security"] = [{"bearer": []}]
    for path, item in doc.get("paths", {}).items():
        for operation in item.values():
            responses = operation.get("responses", {})
            responses.pop("422", None)
            for response in responses.values():
                # FastAPI files a response model under the route's media type
                # (text/plain for /metrics): a problem is always problem+json.
                content = response.get("content", {})
                if any(media.get("schema") == _PROBLEM_REF for media in content.values()):
                    response["content"] = {MEDIA_TYPE: {"schema": _PROBLEM_REF}}
            if path in OPEN_PATHS:
                operation["security"] = []
    app.openapi_schema = doc
    return doc
