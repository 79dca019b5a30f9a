"""What every response model shares: no unknown keys, every key always present."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class ResponseModel(BaseModel):
    """Base of the response models: an unknown key is an error (``extra="forbid"``), and
    the JSON schema marks fields with defaults as required, since they are always sent."""

    model_config = ConfigDict(extra="forbid", json_schema_serialization_defaults_required=True)


#: An ISO 8601 date and time with its UTC offset (``datetime.isoformat()``), as text.
IsoDateTime = Annotated[str, Field(json_schema_extra={"format": "date-time"})]

#: Worst severity among an instance's findings (rulebook introduction), or ``ok``
#: (:attr:`scp.pipeline.model.PipelineResult.verdict`).
Verdict = Literal["ok", "invalid", "corrected", "warning", "info"]

#: ``receiving`` until no instance arrived for ``[series] quiet_seconds``, then ``settled``.
SeriesState = Literal["receiving", "settled"]


def dump(model: type[ResponseModel], data: Mapping[str, Any]) -> dict[str, Any]:
    """``data`` validated against ``model``, as JSON-able data (what ``--json`` prints).

    Raises :class:`pydantic.ValidationError` when ``data`` is not of that shape.
    """
    return model.model_validate(data).model_dump(mode="json")


def dump_list(
    model: type[ResponseModel], rows: Iterable[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """Each of ``rows`` through :func:`dump`."""
    return [dump(model, row) for row in rows]
