"""Which spacing an image gives at all: rules 5, 12 and 20.

* ``PIXEL_SPACING_IMAGER_ONLY`` (rule 12): only Imager Pixel Spacing
  (0018,1164), at the detector (PS3.3 C.8.11.4).
* ``NOMINAL_SCANNED_ONLY`` (rule 20, section F, CP-2330): only Nominal
  Scanned Pixel Spacing (0018,2010), SC Image Module PS3.3 C.8.6.2.
* ``PIXEL_SPACING_MISSING`` (rule 5): no Pixel Spacing (0028,0030) and no
  Pixel Measures Sequence (0028,9110) giving it; severity by the IOD's Type
  (Type 1 in the Image Plane Module C.7.6.2 for CT, MR, PT; Type 2 for NM).
  Not raised when the spacing lives in ultrasound regions (rule 15).
"""

from __future__ import annotations

from ..labels import attribute_label
from ..messages import finding
from ..model import Finding, Severity
from ..raw import DSAttr
from ..report import SpacingReport
from .ultrasound import spatial_regions_agree

__all__ = ["presence_findings"]

_PS = "PixelSpacing"


def _has_pixel_spacing(report: SpacingReport) -> bool:
    if report.pixel_spacing is not None and not report.pixel_spacing.parsed.is_empty:
        return True
    return any(
        a is not None and not a.parsed.is_empty
        for pm in report.pixel_measures
        for a in pm.pixel_spacing
    )


def _present(attr: DSAttr | None) -> bool:
    return attr is not None and not attr.parsed.is_empty


def _missing_severity(report: SpacingReport) -> tuple[Severity, str]:
    if report.is_cross_sectional:
        return Severity.INVALID, "Type 1 in the Image Plane Module C.7.6.2 / Pixel Measures"
    if report.modality == "NM":
        return Severity.WARNING, "Type 2 in the NM Image Pixel Module"
    if report.is_projection:
        return Severity.WARNING, "neither Pixel Spacing nor Imager Pixel Spacing is present"
    return Severity.INFO, "no physical spacing is given"


def presence_findings(report: SpacingReport) -> list[Finding]:
    """PIXEL_SPACING_MISSING, IMAGER_ONLY (rule 12) and NOMINAL_SCANNED_ONLY (rule 20)."""
    if not report.is_image or _has_pixel_spacing(report):
        return []
    ps_label = attribute_label(_PS)
    if _present(report.imager_pixel_spacing):
        ermf = report.ermf.single if report.ermf is not None else None
        derived = (
            "; the index may derive patient-plane spacing as IPS/ERMF"
            if ermf is not None and ermf > 1
            else ""
        )
        return [
            finding(
                "PIXEL_SPACING_IMAGER_ONLY",
                Severity.INFO,
                "12",
                "ImagerPixelSpacing",
                f"{ps_label} is absent; only {attribute_label('ImagerPixelSpacing')} is given: "
                f"spacing at the detector, not in the patient, never copied into PS{derived} "
                "(rule 12)",
            )
        ]
    if _present(report.nominal_scanned_pixel_spacing):
        severity = Severity.WARNING if report.has_plane else Severity.INFO
        detail = (
            "; IPP/IOP are present but NSPS is not a 3D spacing (CP-2330)"
            if report.has_plane
            else ""
        )
        return [
            finding(
                "NOMINAL_SCANNED_ONLY",
                severity,
                "20",
                "NominalScannedPixelSpacing",
                f"{ps_label} is absent; only "
                f"{attribute_label('NominalScannedPixelSpacing')} is given: spacing on the "
                f"scanned medium{detail} (rule 20, PS3.3 C.8.6.2)",
            )
        ]
    if spatial_regions_agree(report) is not None:
        return []  # spacing lives in the ultrasound regions (rule 15)
    severity, why = _missing_severity(report)
    state = "empty" if report.pixel_spacing is not None else "absent"
    return [
        finding(
            "PIXEL_SPACING_MISSING",
            severity,
            "5",
            _PS,
            f"{ps_label} is {state} and no {attribute_label('PixelMeasuresSequence')} gives it "
            f"for this {report.modality or 'unknown modality'} image ({why}); "
            "no spacing is assumed, never 1.0 (rule 5)",
        )
    ]
