"""Errors as RFC 9457 problem bodies (``application/problem+json``, :class:`scp.models.Problem`).

400 for a bad parameter (an unknown one, a value out of range, a cursor this API did not
issue), 404 for an unknown path or UID; 401, 405 and 414 come from
:mod:`scp.api.guard`, which also turns any other exception into a 500 without detail.
"""

from __future__ import annotations

from collections.abc import Mapping
from http import HTTPStatus

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse, Response

from scp.models import Problem
from storage.queries import BadQuery, NotFound

MEDIA_TYPE = "application/problem+json"


def problem(
    status: int, detail: str | None = None, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    """The problem response for ``status`` (title: its HTTP phrase)."""
    body = Problem(title=HTTPStatus(status).phrase, status=status, detail=detail or None)
    return JSONResponse(
        body.model_dump(exclude_none=True),
        status_code=status,
        media_type=MEDIA_TYPE,
        headers=dict(headers or {}),
    )


def validation_detail(exc: RequestValidationError) -> str:
    """``unknown parameter 'colour'`` or ``limit: Input should be ...``, one per error."""
    parts = []
    for error in exc.errors():
        name = str(error["loc"][-1]) if error.get("loc") else "request"
        if error.get("type") == "extra_forbidden":
            parts.append(f"unknown parameter {name!r}")
        else:
            parts.append(f"{name}: {error.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


async def _invalid_parameter(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    return problem(400, validation_detail(exc))


async def _bad_query(_request: Request, exc: Exception) -> Response:
    return problem(400, str(exc))


async def _not_found(_request: Request, exc: Exception) -> Response:
    return problem(404, str(exc))


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        return problem(404, f"no resource at {request.url.path}")
    return problem(exc.status_code, None, exc.headers)


def install_problem_handlers(app: FastAPI) -> None:
    """Answer every error the routes raise with a problem body."""
    app.add_exception_handler(RequestValidationError, _invalid_parameter)
    app.add_exception_handler(NotFound, _not_found)
    # Only the client's mistakes are 400: any other ValueError (a corrupt stored state, a
    # model of ours that does not validate) is a 500 without detail (scp.api.guard).
    app.add_exception_handler(BadQuery, _bad_query)
    app.add_exception_handler(HTTPException, _http_error)
