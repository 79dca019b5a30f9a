"""Query parameters of the API, one model per endpoint (documented in the OpenAPI).

An unknown parameter is a 400 (``extra="forbid"``); an empty value (``?state=``) means
"not given"; a repeated parameter counts once, with its last value.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

from scp.models import JobState, SeriesState
from scp.pipeline.vr import is_finding_code
from storage.queries import MAX_LIMIT

DEFAULT_LIMIT = 100


def _blank_is_absent(value: Any) -> Any:
    return None if value == "" else value


def _blank_is_default(value: Any) -> Any:
    return DEFAULT_LIMIT if value == "" else value


# Field before BeforeValidator: pydantic then documents the bounds as minimum/maximum.
Limit = Annotated[
    int,
    Field(ge=1, le=MAX_LIMIT, description=f"page size, 1-{MAX_LIMIT}"),
    BeforeValidator(_blank_is_default),
]
Cursor = Annotated[
    str | None, Field(description="`next` of the last page"), BeforeValidator(_blank_is_absent)
]
Text = Annotated[str | None, BeforeValidator(_blank_is_absent)]


def _finding_code(value: str | None) -> str | None:
    if value is not None and not is_finding_code(value):
        raise ValueError(f"{value!r} is not a finding code (A-Z, 0-9 and _, e.g. SLICE_MISSING)")
    return value


FindingCode = Annotated[
    str | None,
    Field(description="a finding code of the series or of an instance (`SLICE_MISSING`)"),
    BeforeValidator(_blank_is_absent),
    AfterValidator(_finding_code),
]


class _Query(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PageQuery(_Query):
    """``?limit=&cursor=``: keyset pages."""

    limit: Limit = DEFAULT_LIMIT
    cursor: Cursor = None


class SeriesQuery(_Query):
    """``GET /series``: filters, then the page."""

    study_instance_uid: Text = Field(None, description="Study Instance UID (0020,000D)")
    modality: Text = Field(None, description="Modality (0008,0060)")
    code: FindingCode = None
    state: Annotated[SeriesState | None, BeforeValidator(_blank_is_absent)] = None
    limit: Limit = DEFAULT_LIMIT
    cursor: Cursor = None


class JobsQuery(_Query):
    """``GET /forwarding/jobs``: filters, then the page."""

    state: Annotated[JobState | None, BeforeValidator(_blank_is_absent)] = None
    destination: Text = Field(None, description="a destination's name")
    series_instance_uid: Text = Field(None, description="Series Instance UID (0020,000E)")
    limit: Limit = DEFAULT_LIMIT
    cursor: Cursor = None


class DeleteQuery(_Query):
    """``DELETE /studies|series|instances/{uid}``."""

    force: bool = Field(
        False, description="delete instances a destination has not confirmed yet, too"
    )
    reason: Annotated[
        str | None, Field(max_length=1024, description="why (recorded with the deletion)")
    ] = None


class DeletionsQuery(_Query):
    """``GET /deletions``: keyset pages, newest first."""

    limit: Limit = DEFAULT_LIMIT
    cursor: Cursor = None
