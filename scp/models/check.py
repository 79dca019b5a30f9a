"""``spacing-scp check --json``: the files checked and their series."""

from __future__ import annotations

from pydantic import Field

from scp.models.base import ResponseModel
from scp.models.instance import CheckedInstance
from scp.models.series import Series


class CheckReport(ResponseModel):
    """The whole ``check --json`` output; each series is the same SERIES the API gives."""

    instances: list[CheckedInstance]
    series: list[Series]
    skipped_non_dicom: int = Field(description="files skipped: no DICM prefix (PS3.10 7.1)")
