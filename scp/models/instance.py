"""INSTANCE: one stored instance as the index knows it, and one file as ``check`` saw it."""

from __future__ import annotations

from pydantic import Field

from scp.models.base import IsoDateTime, ResponseModel, Verdict
from scp.models.findings import Action, Finding
from scp.pipeline.model import SpacingSource


class PixelSpacing(ResponseModel):
    """The effective in-plane spacing of an instance (rules 5-20): what the node believes,
    never defaulted to 1.0 (all null when no usable source exists, rule 5)."""

    row_mm: float | None = Field(
        description="mm between the centres of adjacent rows (first Pixel Spacing value, "
        "(0028,0030), rule 6)"
    )
    column_mm: float | None = Field(description="mm between the centres of adjacent columns")
    source: SpacingSource | None = Field(description="the attribute the value comes from")
    calibration: str | None = Field(
        description="what the value measures (rule 14 label), e.g. 'at detector'"
    )


class Instance(ResponseModel):
    """INSTANCE of the index (``GET /instances/{uid}``, ``spacing-scp instances``)."""

    sop_instance_uid: str = Field(description="SOP Instance UID (0008,0018)")
    series_instance_uid: str = Field(description="Series Instance UID (0020,000E)")
    sop_class_uid: str = Field(description="SOP Class UID (0008,0016)")
    transfer_syntax_uid: str = Field(description="Transfer Syntax UID (0002,0010) as received")
    instance_number: str | None = Field(description="Instance Number (0020,0013), text")
    calling_ae_title: str = Field(description="the sender's AE title (PS3.8 A-ASSOCIATE)")
    received_at: IsoDateTime = Field(description="last reception, UTC")
    receive_count: int = Field(description="times this SOP Instance UID was received")
    status: int = Field(description="the C-STORE status answered (PS3.4 B.2.3), e.g. 0 Success")
    size_bytes: int = Field(description="size of the stored file, bytes")
    received_pixel_spacing: str | None = Field(
        description="Pixel Spacing (0028,0030) exactly as received (raw DS text)"
    )
    pixel_spacing: PixelSpacing
    verdict: Verdict
    findings: list[Finding]
    actions: list[Action]
    original_kept: bool = Field(description="the file as received is kept beside the edited one")


class CheckedInstance(ResponseModel):
    """One file of ``spacing-scp check --json`` (``instances``)."""

    path: str = Field(description="the file checked")
    sop_instance_uid: str | None = Field(description="SOP Instance UID (0008,0018)")
    series_instance_uid: str | None = Field(description="Series Instance UID (0020,000E)")
    verdict: Verdict = Field(description="'invalid' for an unreadable file")
    received_pixel_spacing: str | None = Field(
        description="Pixel Spacing (0028,0030) exactly as in the file (raw DS text)"
    )
    pixel_spacing: PixelSpacing
    findings: list[Finding] = Field(description="FILE_UNREADABLE alone for an unreadable file")
    actions: list[Action]
    fixed_copy: str | None = Field(description="the corrected copy written (--fix), or null")


class InstancePage(ResponseModel):
    """A page of ``GET /series/{uid}/instances``, in the order received."""

    items: list[Instance]
    next: str | None = Field(description="cursor of the next page; null on the last")
