"""Rule checks for rulebook sections A-F (rules 1-20) and rule 22 per instance.

:func:`validate` looks at the values as received and returns
:class:`~scp.pipeline.model.Finding` objects.  It never changes anything:
corrections (rules 2, 3, 7 and the comma decimal of rule 1) are decided, and
reported with severity ``corrected``, by :mod:`scp.pipeline.decide`.

Codes raised here (severity; rule):

* ``PIXEL_SPACING_INVALID`` (invalid; 1, 5): a value of Pixel Spacing
  (0028,0030), Imager Pixel Spacing (0018,1164) or Nominal Scanned Pixel
  Spacing (0018,2010) -- top level or in a Pixel Measures item -- is not a
  Decimal String, not finite, empty, zero or negative.
* ``PIXEL_SPACING_VM`` (warning for VM 1, invalid for VM other than 1 or 2; 3).
* ``PIXEL_SPACING_OUT_OF_RANGE`` (warning; 8): outside
  ``policy.plausible_range_mm`` for the modality.
* ``PIXEL_ASPECT_RATIO_PRESENT`` (warning for ``1\\1``, info when redundant
  with a physical spacing; 9), ``PIXEL_ASPECT_RATIO_INVALID`` (warning; 9),
  ``PIXEL_ASPECT_RATIO_MISMATCH`` (warning; 9): PAR disagrees with the spacing
  in both orders (the reversed case is rule 7, raised by decide).
* ``PIXEL_SPACING_CALIBRATION_UNKNOWN`` (warning; 10): PS differs from IPS (or
  NSPS) without Pixel Spacing Calibration Type (0028,0A02).
* ``PIXEL_SPACING_GEOMETRY_UNCORRECTED`` (warning; 10): PSCT GEOMETRY with PS
  equal to IPS.
* ``PIXEL_SPACING_CALIBRATION_TYPE_INVALID`` (warning; 11): PSCT is neither
  GEOMETRY nor FIDUCIAL (PS3.3 10.7.1.2).
* ``CALIBRATION_DESCRIPTION_MISSING`` (warning; 11).
* ``PIXEL_SPACING_IMAGER_ONLY`` (info; 12): no PS, IPS present.
* ``ERMF_INVALID`` (warning; 13): ERMF not a number > 1.
* ``ERMF_INCONSISTENT`` (warning; 13): |SID/SOD - ERMF| > 1e-4.
* ``US_REGIONS_DIFFER`` (warning; 16).
* ``PIXEL_MEASURES_MALFORMED`` (invalid; 17), ``PIXEL_MEASURES_VARY``
  (warning; 18).
* ``NOMINAL_SCANNED_ONLY`` (info; warning when the image has IPP/IOP; 20).
* ``PIXEL_SPACING_MISSING`` (rule 5/17; invalid for CT, MR and PT whose IODs
  make Pixel Spacing Type 1 -- Image Plane Module C.7.6.2 or Pixel Measures
  C.7.6.16.2.1 -- so nothing can be measured; warning for NM, where it is
  Type 2, and for projection radiography without PS or IPS; info for every
  other image, e.g. SC, US without spatial regions, RT Dose, SEG).  Never
  raised for non-images (no Rows/Columns: RT Plan, SR, ...), nor when the
  spacing lives elsewhere (IPS: rule 12, NSPS: rule 20, ultrasound regions:
  rule 15).
* ``GEOMETRY_INVALID`` (invalid; 22): Image Orientation (Patient) not two unit,
  orthogonal direction cosines within 1e-4, or IPP/IOP not 3/6 numbers.
* ``DS_INVALID`` (warning; 1): another DS the node reads (Slice Thickness,
  Spacing Between Slices, Reconstruction Diameter, SID, SOD) is not a Decimal
  String; it is then ignored.

The checks live in :mod:`scp.pipeline.checks`, one module per rule group;
tolerances and pair comparisons in :mod:`scp.pipeline.compare`.
"""

from __future__ import annotations

from .checks.geometry import geometry_findings
from .checks.multiframe import multiframe_findings
from .checks.presence import presence_findings
from .checks.projection import calibration_findings, ermf_findings
from .checks.spacing import ancillary_findings, aspect_ratio_findings, section_ab
from .checks.ultrasound import ultrasound_findings
from .model import Finding
from .policy import SpacingPolicy
from .report import SpacingReport

__all__ = ["validate"]


def validate(
    report: SpacingReport, policy: SpacingPolicy, *, comma_decimal: bool = False
) -> list[Finding]:
    """Every rule check of sections A-F and rule 22 on the values as received.

    ``comma_decimal`` is true when a matching swap rule declares that the
    sending device writes comma decimals: such values are then numbers
    (decide.py corrects them) instead of invalid.
    """
    findings = section_ab(report, policy, comma_decimal)
    findings += aspect_ratio_findings(report, comma_decimal)
    findings += calibration_findings(report, comma_decimal)
    findings += ermf_findings(report)
    findings += ultrasound_findings(report)
    findings += multiframe_findings(report)
    findings += presence_findings(report)
    findings += geometry_findings(report)
    findings += ancillary_findings(report)
    return findings
