"""Deletions from the store (issue 20): ``GET /deletions``, ``DELETE /studies|series|
instances/{uid}``, ``spacing-scp deletions --json`` and ``spacing-scp delete --json``."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from scp.models.base import IsoDateTime, ResponseModel

#: The rule a deletion was made under (``storage.retention.REASONS``).
DeletionReason = Literal["keep_days", "keep_flagged_days", "watermark", "manual"]
DeletionLevel = Literal["study", "series", "instance"]


class Deletion(ResponseModel):
    """One deletion, one row per series it touched."""

    id: int
    deleted_at: IsoDateTime = Field(description="when the index rows were removed, UTC")
    level: DeletionLevel = Field(description="what was asked for: a study, series or instance")
    study_instance_uid: str = Field(description="Study Instance UID (0020,000D)")
    series_instance_uid: str = Field(description="Series Instance UID (0020,000E)")
    sop_instance_uid: str | None = Field(
        description="SOP Instance UID (0008,0018) when one instance was deleted by hand"
    )
    instances: int = Field(description="instances of the series deleted")
    bytes: int = Field(description="size of their files, bytes")
    reason: DeletionReason = Field(description="the retention rule, or manual")
    actor: str = Field(description="policy, cli:USER or http (the token holder)")
    forced: bool = Field(description="undelivered instances were deleted too")
    comment: str | None = Field(description="the reason a person gave")


class DeletionPage(ResponseModel):
    """Deletions, newest first."""

    items: list[Deletion]
    next: str | None = Field(description="cursor of the next page")


class DeletionResult(ResponseModel):
    """What a person's deletion removed."""

    level: DeletionLevel
    uid: str = Field(description="the UID asked for")
    instances: int = Field(description="instances deleted")
    bytes: int = Field(description="bytes of their files")
    forced: bool = Field(description="undelivered instances were deleted (force)")
    deletion_ids: list[int] = Field(description="the rows of GET /deletions recording it")
