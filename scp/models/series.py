"""SERIES: the spacing summary of a series (rulebook section G), from the index or ``check``.

Both come from :func:`scp.series.summary.compose_series`; this is their one shape.
"""

from __future__ import annotations

from pydantic import Field

from scp.models.base import IsoDateTime, ResponseModel, SeriesState
from scp.models.findings import CountedFinding
from scp.pipeline.model import SpacingSource


class SeriesPixelSpacing(ResponseModel):
    """The most common effective in-plane spacing of the series' instances."""

    row_mm: float | None = Field(description="mm between rows (rule 6); null: none usable")
    column_mm: float | None = Field(description="mm between columns")
    source: SpacingSource | None = Field(description="the attribute it comes from")
    consistent: bool = Field(
        description="every instance (and stack) has the same spacing (rule 7); false raises "
        "SERIES_PIXEL_SPACING_INCONSISTENT"
    )


class SliceSpacing(ResponseModel):
    """Z spacing of a stack (rules 23-30), measured along the slice normal from Image
    Position (Patient) (0020,0032) and Image Orientation (Patient) (0020,0037).

    The same keys whether or not the series has plane geometry: without it every value
    is null (``distinct_gaps_mm`` empty), never 1.0 (rule 29).
    """

    mm: float | None = Field(
        description="median gap between consecutive distinct positions, mm (rule 24); null "
        "when undefined: one position (rule 29), duplicates that are not a clean 4D repeat "
        "(rule 27), no or invalid plane geometry (rule 22)"
    )
    min_mm: float | None = Field(description="smallest gap, mm")
    max_mm: float | None = Field(description="largest gap, mm")
    uniform: bool | None = Field(description="every gap within the tolerance (rule 25)")
    missing_slices: int | None = Field(description="slices missing in the gaps (rule 26)")
    tilt_degrees: float | None = Field(
        description="angle between the stacking direction and the slice normal, degrees "
        "(gantry tilt, rule 28)"
    )
    provisional: bool = Field(
        description="the series is still receiving: missing slices and duplicates may yet "
        "arrive (rule 26)"
    )
    distinct_gaps_mm: list[float] = Field(
        description="representative gap of each cluster of gaps, mm (rule 30)"
    )
    repeats: int | None = Field(
        description="slices at each position: 1 without duplicates, r >= 2 for a clean 4D "
        "repeat, null otherwise (rule 27)"
    )


class Stack(ResponseModel):
    """One stack of a series (rule 21): slices with the same Frame of Reference UID,
    Rows, Columns and Image Orientation (Patient) within 1e-4."""

    key: str = Field(description="'<Frame of Reference UID>|<Rows>x<Columns>|<IOP x 1e4>'")
    frame_of_reference_uid: str = Field(description="Frame of Reference UID (0020,0052)")
    rows: int = Field(description="Rows (0028,0010)")
    columns: int = Field(description="Columns (0028,0011)")
    iop: list[float] = Field(
        description="Image Orientation (Patient) (0020,0037) of the slice that created the "
        "stack: row then column direction cosines"
    )
    main: bool = Field(description="the stack the series' slice_spacing is taken from")
    slices: int = Field(description="slices (instances, or frames of enhanced multi-frame)")
    positions: int = Field(description="distinct positions along the normal")
    slice_spacing: SliceSpacing
    slice_thickness_mm: float | None = Field(description="Slice Thickness (0018,0050), mm")
    spacing_between_slices_mm: float | None = Field(
        description="Spacing Between Slices (0018,0088), mm: a cross-check only (rule 24)"
    )
    findings: list[CountedFinding]


class Series(ResponseModel):
    """SERIES (``GET /series/{uid}``, ``spacing-scp series show --json``, ``check --json``)."""

    series_instance_uid: str = Field(description="Series Instance UID (0020,000E)")
    study_instance_uid: str | None = Field(
        description="Study Instance UID (0020,000D); null only from check, for a file without it"
    )
    modality: str | None = Field(description="Modality (0008,0060)")
    series_number: str | None = Field(description="Series Number (0020,0011), text")
    series_description: str | None = Field(description="Series Description (0008,103E)")
    manufacturer: str | None = Field(description="Manufacturer (0008,0070)")
    manufacturer_model_name: str | None = Field(description="Manufacturer's Model Name (0008,1090)")
    station_name: str | None = Field(description="Station Name (0008,1010)")
    instance_count: int = Field(description="instances in the series")
    corrected_instances: int = Field(description="instances the node edited")
    deleted_instances: int = Field(
        description="instances deleted since they were received (retention or by hand); the "
        "geometry and spacing still describe the series as received, instance_count what remains",
    )
    last_received_at: IsoDateTime | None = Field(
        description="last reception, UTC; null from check (files, not received)"
    )
    state: SeriesState = Field(description="check's series are always settled")
    pixel_spacing: SeriesPixelSpacing
    slice_spacing: SliceSpacing = Field(description="of the main stack")
    slice_thickness_mm: float | None = Field(
        description="Slice Thickness (0018,0050) of the main stack, mm; never a spacing (rule 29)"
    )
    spacing_between_slices_mm: float | None = Field(
        description="Spacing Between Slices (0018,0088) of the main stack, mm"
    )
    stacks: list[Stack] = Field(description="every stack, main first; empty without geometry")
    findings: list[CountedFinding]


class SeriesPage(ResponseModel):
    """A page of ``GET /series``, newest first."""

    items: list[Series]
    next: str | None = Field(description="cursor of the next page; null on the last")
