"""Rulebook section C, projection radiography (CR, DX, MG, IO, XA, RF): rules 10, 11, 13.

* Rules 10-11: Basic Pixel Spacing Calibration Macro, PS3.3 10.7 (Table
  10-10): Pixel Spacing (0028,0030) against Imager Pixel Spacing (0018,1164)
  or Nominal Scanned Pixel Spacing (0018,2010) and Pixel Spacing Calibration
  Type (0028,0A02) / Description (0028,0A04) (10.7.1.1, 10.7.1.2).
* Rule 13: Estimated Radiographic Magnification Factor (0018,1114) > 1 and
  consistent with Distance Source to Detector (0018,1110) / Distance Source to
  Patient (0018,1111) (DX Positioning Module, PS3.3 C.8.11.5).
"""

from __future__ import annotations

from ..compare import ERMF_ATOL, reversed_pair, same_pair, usable_pair
from ..labels import attribute_label, clip
from ..messages import finding
from ..model import Finding, Severity
from ..report import SpacingReport

__all__ = ["calibration_findings", "ermf_findings"]

_PS = "PixelSpacing"
_CALIBRATION_TYPES = frozenset({"GEOMETRY", "FIDUCIAL"})


def calibration_findings(report: SpacingReport, comma_decimal: bool) -> list[Finding]:
    """Rules 10 and 11 (PS3.3 10.7.1.1, 10.7.1.2, Table 10-10)."""
    findings: list[Finding] = []
    psct = report.calibration_type or None
    psct_label = attribute_label("PixelSpacingCalibrationType")
    if psct is not None:
        if psct not in _CALIBRATION_TYPES:
            findings.append(
                finding(
                    "PIXEL_SPACING_CALIBRATION_TYPE_INVALID",
                    Severity.WARNING,
                    "11",
                    "PixelSpacingCalibrationType",
                    f"{psct_label} '{clip(psct)}' is neither GEOMETRY nor FIDUCIAL "
                    "(rule 11, PS3.3 10.7.1.2)",
                )
            )
        if not report.calibration_description:
            findings.append(
                finding(
                    "CALIBRATION_DESCRIPTION_MISSING",
                    Severity.WARNING,
                    "11",
                    "PixelSpacingCalibrationDescription",
                    f"{attribute_label('PixelSpacingCalibrationDescription')} is required "
                    f"when {psct_label} is present ('{clip(psct)}') (rule 11, PS3.3 Table 10-10)",
                )
            )
    rows, columns = report.rows, report.columns
    ps = usable_pair(report.pixel_spacing, rows, columns, comma_decimal)
    if ps is None:
        return findings
    ips = usable_pair(report.imager_pixel_spacing, rows, columns, comma_decimal)
    reference, ref_kw = ips, "ImagerPixelSpacing"
    if reference is None and not (report.is_secondary_capture and report.has_plane):
        reference = usable_pair(report.nominal_scanned_pixel_spacing, rows, columns, comma_decimal)
        ref_kw = "NominalScannedPixelSpacing"
    if reference is None:
        return findings
    ps_label = attribute_label(_PS)
    if psct is None and not same_pair(ps, reference) and not reversed_pair(ps, reference):
        findings.append(
            finding(
                "PIXEL_SPACING_CALIBRATION_UNKNOWN",
                Severity.WARNING,
                "10",
                _PS,
                f"{ps_label} {ps[0]:g}\\{ps[1]:g} differs from {attribute_label(ref_kw)} "
                f"{reference[0]:g}\\{reference[1]:g} and {psct_label} is absent: "
                "calibration unknown (rule 10, PS3.3 10.7.1.1)",
            )
        )
    if psct == "GEOMETRY" and ips is not None and same_pair(ps, ips):
        findings.append(
            finding(
                "PIXEL_SPACING_GEOMETRY_UNCORRECTED",
                Severity.WARNING,
                "10",
                _PS,
                f"{psct_label} is GEOMETRY but {ps_label} equals "
                f"{attribute_label('ImagerPixelSpacing')} {ips[0]:g}\\{ips[1]:g}: "
                "no magnification correction visible (rule 10, PS3.3 10.7.1.2)",
            )
        )
    return findings


def ermf_findings(report: SpacingReport) -> list[Finding]:
    """Rule 13: ERMF (0018,1114) > 1 and consistent with SID/SOD (PS3.3 C.8.11.5)."""
    attr = report.ermf
    if attr is None or attr.parsed.is_empty:
        return []
    ermf = attr.single
    if ermf is None or not ermf > 1.0:
        return [
            finding(
                "ERMF_INVALID",
                Severity.WARNING,
                "13",
                attr.keyword,
                f"{attr.label} value '{clip(attr.raw)}' is not a single number > 1; "
                "IPS/ERMF is not derived (rule 13)",
            )
        ]
    sid = report.distance_source_to_detector.single if report.distance_source_to_detector else None
    sod = report.distance_source_to_patient.single if report.distance_source_to_patient else None
    if sid is None or sod is None or sid <= 0 or sod <= 0:
        return []
    ratio = sid / sod
    if abs(ratio - ermf) <= ERMF_ATOL:
        return []
    return [
        finding(
            "ERMF_INCONSISTENT",
            Severity.WARNING,
            "13",
            attr.keyword,
            f"{attr.label} {ermf:g} differs from {attribute_label('DistanceSourceToDetector')} "
            f"/ {attribute_label('DistanceSourceToPatient')} = {sid:g}/{sod:g} = {ratio:.6g} "
            f"by more than {ERMF_ATOL:g} (rule 13)",
        )
    ]
