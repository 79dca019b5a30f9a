"""Rulebook section D, ultrasound: rules 15-16.

Spacing lives in the Sequence of Ultrasound Regions (0018,6011), US Region
Calibration Module PS3.3 C.8.5.5; spatial regions with different Physical
Delta X/Y (0018,602C)/(0018,602E) are reported, never collapsed.
"""

from __future__ import annotations

from ..compare import REGION_RTOL, agree
from ..labels import attribute_label
from ..messages import finding
from ..model import Finding, Severity
from ..report import SpacingReport

__all__ = ["spatial_regions_agree", "ultrasound_findings"]


def spatial_regions_agree(report: SpacingReport) -> bool | None:
    """``None`` without spatial regions, else whether they all agree (rule 16)."""
    regions = [r for r in report.ultrasound_regions or () if r.is_spatial]
    if not regions:
        return None
    first = regions[0]
    return all(
        agree(r.row_mm or 0.0, first.row_mm or 0.0, REGION_RTOL)
        and agree(r.column_mm or 0.0, first.column_mm or 0.0, REGION_RTOL)
        for r in regions[1:]
    )


def ultrasound_findings(report: SpacingReport) -> list[Finding]:
    """Rules 15-16: Sequence of Ultrasound Regions (0018,6011), PS3.3 C.8.5.5."""
    if spatial_regions_agree(report) is not False:
        return []
    listed = "; ".join(
        f"region {r.index}: {r.row_mm:.6g}\\{r.column_mm:.6g} mm"
        for r in report.ultrasound_regions or ()
        if r.is_spatial
    )
    return [
        finding(
            "US_REGIONS_DIFFER",
            Severity.WARNING,
            "16",
            "SequenceOfUltrasoundRegions",
            f"{attribute_label('SequenceOfUltrasoundRegions')} holds spatial regions with "
            f"different deltas ({listed}); not collapsed into one spacing (rule 16)",
        )
    ]
