"""The in-plane spacing the node believes for an instance, and its source.

Computed on the report *after* the decided edits (``SpacingReport.with_edits``).
Order of preference:

1. Pixel Spacing (0028,0030) -- PS3.3 C.7.6.2, 10.7.1.3.  For a Secondary
   Capture image with IPP/IOP this is the spacing for 3D (rule 20, CP-2330).
2. Pixel Measures Sequence (0028,9110) -- PS3.3 C.7.6.16.2.1: the shared item,
   or the per-frame items when they all agree.  When they differ (rule 18)
   the spacing is per frame: the instance gets no single effective spacing and
   the search stops there (the per-frame values are in the report).
3. Imager Pixel Spacing (0018,1164) / ERMF (0018,1114) when ERMF is a number
   > 1 (rule 13).  An ERMF that disagrees with SID/SOD is still used (the
   disagreement is a warning, not an invalid value).
4. Imager Pixel Spacing (0018,1164): at the detector (rule 12).
5. Nominal Scanned Pixel Spacing (0018,2010): on the scanned medium (rule 20).
6. Ultrasound regions (0018,6011) -- PS3.3 C.8.5.5: only when there is one
   spatial region or all spatial regions agree; mm = |delta| x 10 (rule 15).

A value that is invalid (rules 1, 3, 5), has VM 1 (rule 3: read as isotropic
only where a rule says so, and none does), or sits in a malformed Pixel
Measures Sequence (rule 17) never becomes effective spacing: the next source
is tried.  A zero value tolerated by rule 5 (Rows = 1 or Columns = 1) gives
``None`` for that axis.  Nothing defaults to 1.0.

Calibration labels (rule 14): FIDUCIAL "calibrated by operator"; GEOMETRY
"corrected at modality"; IPS/ERMF "corrected using ERMF"; IPS "at detector";
PS equal to IPS without PSCT "at detector" (PS3.3 10.7.1.1: not calibrated);
PS equal to NSPS "on scanned medium"; other PS of projection radiography or
with IPS/NSPS present "uncertain"; NSPS "on scanned medium".  Cross-sectional
PS/Pixel Measures and ultrasound regions are in the patient by definition and
get no label (``None``).
"""

from __future__ import annotations

from .checks.multiframe import pixel_measures_problems
from .checks.ultrasound import spatial_regions_agree
from .compare import same_pair, usable_pair
from .model import EffectiveSpacing, SpacingSource
from .raw import DSAttr
from .report import SpacingReport

__all__ = ["calibration_label", "effective_spacing"]

_Pair = tuple[float, float]


def _pair(report: SpacingReport, attr: DSAttr | None) -> _Pair | None:
    pair = usable_pair(attr, report.rows, report.columns)
    if pair is None or (pair[0] == 0 and pair[1] == 0):
        return None
    return pair


def _result(pair: _Pair, source: SpacingSource, calibration: str | None) -> EffectiveSpacing:
    row, column = pair
    return EffectiveSpacing(
        row_mm=row if row > 0 else None,
        column_mm=column if column > 0 else None,
        source=source,
        calibration=calibration,
    )


def calibration_label(report: SpacingReport, spacing: _Pair) -> str | None:
    """Rule 14 label for a spacing taken from Pixel Spacing or Pixel Measures."""
    if report.calibration_type == "FIDUCIAL":
        return "calibrated by operator"
    if report.calibration_type == "GEOMETRY":
        return "corrected at modality"
    ips = _pair(report, report.imager_pixel_spacing)
    nsps = None
    if not (report.is_secondary_capture and report.has_plane):
        nsps = _pair(report, report.nominal_scanned_pixel_spacing)
    if ips is not None and same_pair(spacing, ips):
        return "at detector"
    if nsps is not None and same_pair(spacing, nsps):
        return "on scanned medium"
    if report.is_projection or ips is not None or nsps is not None:
        return "uncertain"
    return None


def _measures(report: SpacingReport) -> tuple[_Pair | None, bool]:
    """(spacing, stop): the Pixel Measures spacing; stop when it varies per frame."""
    if not report.pixel_measures or pixel_measures_problems(report):
        return None, False
    shared = [g.pixel_measures for g in report.shared_groups if g.pixel_measures is not None]
    if shared:
        return _pair(report, shared[0].first), False
    pairs = set()
    for group in report.per_frame_groups:
        first = group.pixel_measures.first if group.pixel_measures is not None else None
        pairs.add(_pair(report, first))
    if len(pairs) == 1:
        return next(iter(pairs)), False
    usable = {p for p in pairs if p is not None}
    return None, len(usable) > 1


def _ermf(report: SpacingReport) -> float | None:
    value = report.ermf.single if report.ermf is not None else None
    return value if value is not None and value > 1.0 else None


def _ultrasound(report: SpacingReport) -> _Pair | None:
    if not spatial_regions_agree(report):
        return None
    region = next(r for r in report.ultrasound_regions or () if r.is_spatial)
    if region.row_mm is None or region.column_mm is None:
        return None
    return region.row_mm, region.column_mm


def effective_spacing(report: SpacingReport) -> EffectiveSpacing:
    """Effective (row_mm, column_mm), source and rule 14 label; see module doc."""
    ps = _pair(report, report.pixel_spacing)
    if ps is not None:
        return _result(ps, "PixelSpacing", calibration_label(report, ps))
    measures, stop = _measures(report)
    if measures is not None:
        return _result(measures, "PixelMeasuresSequence", calibration_label(report, measures))
    if stop:
        return EffectiveSpacing()
    ips = _pair(report, report.imager_pixel_spacing)
    ermf = _ermf(report)
    if ips is not None and ermf is not None:
        derived = (ips[0] / ermf, ips[1] / ermf)
        return _result(derived, "ImagerPixelSpacing/ERMF", "corrected using ERMF")
    if ips is not None:
        return _result(ips, "ImagerPixelSpacing", "at detector")
    nsps = _pair(report, report.nominal_scanned_pixel_spacing)
    if nsps is not None:
        return _result(nsps, "NominalScannedPixelSpacing", "on scanned medium")
    regions = _ultrasound(report)
    if regions is not None:
        return _result(regions, "UltrasoundRegion", None)
    return EffectiveSpacing()
