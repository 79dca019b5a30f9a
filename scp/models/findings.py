"""Findings and edits: what the pipeline and the series geometry say about the spacing."""

from __future__ import annotations

from pydantic import Field

from scp.models.base import ResponseModel
from scp.pipeline.model import ModificationReason, Severity


class Finding(ResponseModel):
    """One observation about one instance (:class:`scp.pipeline.model.Finding`)."""

    code: str = Field(description="finding code, e.g. PIXEL_SPACING_INVALID")
    severity: Severity
    message: str = Field(description="what was seen; cites the rule and the attribute tag")
    rule: str | None = Field(description="rulebook rule number, e.g. '5'")
    tag: str | None = Field(description="the attribute concerned, e.g. '(0028,0030)'")


class CountedFinding(ResponseModel):
    """A finding of a series or stack, with how many slices, gaps or instances it concerns.

    Series findings are the geometry's (rules 21-30) followed by the instances' findings
    grouped by code and severity (``message``: the first message in sort order).
    """

    code: str = Field(description="finding code, e.g. SLICE_MISSING")
    severity: Severity
    count: int = Field(description="slices, gaps or instances concerned")
    message: str


class Action(ResponseModel):
    """An edit the node applied to an instance, also recorded in the file's Original
    Attributes Sequence (0400,0561), PS3.3 C.12.1.1.9 (:class:`scp.pipeline.model.Edit`)."""

    code: str = Field(description="the finding code that caused the edit")
    attribute: str = Field(description="keyword of the edited element, e.g. PixelSpacing")
    path: str = Field(
        description="keywords and item indexes down to the element, joined by '/', e.g. "
        "'SharedFunctionalGroupsSequence/0/PixelMeasuresSequence/0/PixelSpacing'"
    )
    old: str | None = Field(description="the value as received (raw DS text)")
    new: str | None = Field(description="the value written; null: the element was removed")
    reason: ModificationReason = Field(
        description="Reason for the Attribute Modification (0400,0565), PS3.3 C.12.1.1.9.2"
    )
