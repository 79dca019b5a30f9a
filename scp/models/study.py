"""STUDY: a study of the index (``spacing-scp studies --json``; not served over HTTP)."""

from __future__ import annotations

from pydantic import Field

from scp.models.base import IsoDateTime, ResponseModel


class Study(ResponseModel):
    """A study with its series and instance counts."""

    study_instance_uid: str = Field(description="Study Instance UID (0020,000D)")
    patient_id: str | None = Field(description="Patient ID (0010,0020)")
    accession_number: str | None = Field(description="Accession Number (0008,0050)")
    study_date: str | None = Field(description="Study Date (0008,0020), YYYYMMDD")
    study_description: str | None = Field(description="Study Description (0008,1030)")
    series_count: int = Field(description="series indexed")
    instance_count: int = Field(description="instances indexed")
    updated_at: IsoDateTime = Field(description="last instance indexed, UTC")
