"""Answers about the service itself: health and errors."""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field

from scp.models.base import ResponseModel


class Health(ResponseModel):
    """``GET /health``: the node answers and its index is reachable (503 when not)."""

    status: Literal["ok", "error"]
    ae_title: str = Field(description="the node's AE title ([node] ae_title)")
    version: str = Field(description="spacing-scp version")
    detail: str | None = Field(description="on error: the kind of error reaching the index")


class Problem(ResponseModel):
    """An error, as an RFC 9457 problem body (``application/problem+json``).

    ``detail`` is omitted when there is nothing to add (a 500 never carries internal detail).
    """

    model_config = ConfigDict(json_schema_serialization_defaults_required=False)

    type: str = Field(default="about:blank", description="RFC 9457 problem type")
    title: str = Field(description="the HTTP status phrase, e.g. 'Not Found'")
    status: int = Field(description="the HTTP status code")
    detail: str | None = Field(default=None, description="what was wrong with the request")
