"""Rulebook sections A-B on the pixel-spacing values: rules 1, 3, 5, 8 and 9.

* Rules 1 and 3 (Decimal String syntax, PS3.5 6.2; VM 2) and rule 5 (finite
  and > 0) on Pixel Spacing (0028,0030), Imager Pixel Spacing (0018,1164) and
  Nominal Scanned Pixel Spacing (0018,2010), top level and in every Pixel
  Measures Sequence (0028,9110) item (PS3.3 C.7.6.16.2.1).
* Rule 8: Pixel Spacing outside ``policy.plausible_range_mm`` for the modality.
* Rule 9: Pixel Aspect Ratio (0028,0034), PS3.3 C.7.6.3.
* Rule 1 for the other DS the node reads (Slice Thickness (0018,0050), Spacing
  Between Slices (0018,0088), Reconstruction Diameter (0018,1100), SID
  (0018,1110), SOD (0018,1111)): ``DS_INVALID``.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..compare import PAR_RTOL, agree, positive_or_exempt, usable_pair
from ..ds import DS_PATTERN, DSKind, DSValue, NormalizedDS
from ..labels import attribute_label, clip
from ..messages import finding, grouped, where_text
from ..model import Finding, Severity
from ..policy import SpacingPolicy
from ..raw import DSAttr
from ..report import SpacingReport

__all__ = ["ancillary_findings", "aspect_ratio_findings", "check_spacing_attr", "section_ab"]

_PS = "PixelSpacing"
_ANCILLARY = frozenset(
    {
        "SliceThickness",
        "SpacingBetweenSlices",
        "ReconstructionDiameter",
        "DistanceSourceToDetector",
        "DistanceSourceToPatient",
    }
)
_PS3_5 = "PS3.5 6.2"


def _invalid_text(part: DSValue) -> str:
    if part.kind is DSKind.COMMA:
        return (
            f"'{clip(part.text)}' uses a comma as decimal mark and no swap rule with "
            f"comma_decimal names this device (rule 1, {_PS3_5})"
        )
    if part.kind is DSKind.EMPTY:
        return f"has an empty value (rule 3, {_PS3_5})"
    if part.kind is DSKind.INVALID and DS_PATTERN.fullmatch(part.text):
        return f"'{clip(part.text)}' is not a finite number (rules 1 and 5)"
    return f"'{clip(part.text)}' is not a Decimal String (rule 1, {_PS3_5})"


def _syntax_findings(attr: DSAttr, norm: NormalizedDS, where: str) -> list[Finding]:
    label = f"{attr.label}{where}"
    findings = []
    vm = norm.vm
    bad = [p for p in norm.kept if p.number is None and (p.kind is not DSKind.EMPTY or vm == 2)]
    if bad:
        details = list(dict.fromkeys(_invalid_text(part) for part in bad))
        if len(bad) == 1 and attr.raw.strip(" ") == bad[0].text:
            message = f"{label} value {details[0]}"
        elif len(details) == 1 and bad[0].kind is DSKind.EMPTY:
            message = f"{label} value '{clip(attr.raw)}' {details[0]}"
        else:
            message = f"{label} value '{clip(attr.raw)}': {'; '.join(details)}"
        rule = "3" if all(p.kind is DSKind.EMPTY for p in bad) else "1"
        findings.append(
            finding("PIXEL_SPACING_INVALID", Severity.INVALID, rule, attr.keyword, message)
        )
    if vm not in (1, 2):
        findings.append(
            finding(
                "PIXEL_SPACING_VM",
                Severity.INVALID,
                "3",
                attr.keyword,
                f"{label} value '{clip(attr.raw)}' has {vm} values; VM must be 2 (rule 3)",
            )
        )
    elif vm == 1:
        findings.append(
            finding(
                "PIXEL_SPACING_VM",
                Severity.WARNING,
                "3",
                attr.keyword,
                f"{label} value '{clip(attr.raw)}' has 1 value; VM must be 2 (row\\column), "
                "not read as isotropic (rule 3)",
            )
        )
    return findings


def _value_findings(
    attr: DSAttr, numbers: Sequence[float], where: str, report: SpacingReport
) -> list[Finding]:
    label = f"{attr.label}{where}"
    bad = [
        f"{('row', 'column')[index] if index < 2 else f'value {index + 1}'} spacing {value:g}"
        for index, value in enumerate(numbers)
        if not positive_or_exempt(value, index, report.rows, report.columns)
    ]
    if not bad:
        return []
    return [
        finding(
            "PIXEL_SPACING_INVALID",
            Severity.INVALID,
            "5",
            attr.keyword,
            f"{label} value '{clip(attr.raw)}': {' and '.join(bad)} not > 0 "
            "(rule 5; zero is allowed only for a single row or column)",
        )
    ]


def _range_findings(
    attr: DSAttr, numbers: Sequence[float], where: str, report: SpacingReport, policy: SpacingPolicy
) -> list[Finding]:
    bounds = policy.plausible_range_mm.get(report.modality or "")
    if bounds is None or len(numbers) != 2:
        return []
    low, high = bounds
    outside = [v for v in numbers if v > 0 and not low <= v <= high]
    if not outside:
        return []
    return [
        finding(
            "PIXEL_SPACING_OUT_OF_RANGE",
            Severity.WARNING,
            "8",
            attr.keyword,
            f"{attr.label}{where} value '{clip(attr.raw)}' is outside the plausible range "
            f"{low:g}-{high:g} mm for {report.modality}; kept, never rescaled (rule 8)",
        )
    ]


def check_spacing_attr(
    attr: DSAttr,
    report: SpacingReport,
    policy: SpacingPolicy,
    *,
    comma_decimal: bool = False,
    frames: Sequence[int] = (),
) -> list[Finding]:
    """Rules 1, 3, 5 and (for Pixel Spacing) 8 on one pixel-spacing value."""
    norm = attr.normalized(comma_decimal)
    if norm.is_empty:
        return []  # an empty Type 2 value: reported as missing
    where = where_text(attr, frames)
    findings = _syntax_findings(attr, norm, where)
    numbers = norm.numbers
    if numbers is None or norm.vm not in (1, 2):
        return findings
    findings += _value_findings(attr, numbers, where, report)
    if attr.keyword == _PS and not findings:
        findings += _range_findings(attr, numbers, where, report, policy)
    return findings


def section_ab(report: SpacingReport, policy: SpacingPolicy, comma_decimal: bool) -> list[Finding]:
    findings: list[Finding] = []
    top = (
        report.pixel_spacing,
        report.imager_pixel_spacing,
        report.nominal_scanned_pixel_spacing,
    )
    for attr in top:
        if attr is not None:
            findings += check_spacing_attr(attr, report, policy, comma_decimal=comma_decimal)
    measures = [a for pm in report.pixel_measures for a in pm.pixel_spacing if a is not None]
    for attr, frames in grouped(measures):
        findings += check_spacing_attr(
            attr, report, policy, comma_decimal=comma_decimal, frames=frames
        )
    return findings


def _best_spacing(
    report: SpacingReport, comma_decimal: bool
) -> tuple[str, tuple[float, float]] | None:
    for attr in (
        report.pixel_spacing,
        report.imager_pixel_spacing,
        report.nominal_scanned_pixel_spacing,
        *(pm.first for pm in report.pixel_measures[:1]),
    ):
        pair = usable_pair(attr, report.rows, report.columns, comma_decimal)
        if attr is not None and pair is not None and pair[0] > 0 and pair[1] > 0:
            return attr.keyword, pair
    return None


def aspect_ratio_findings(report: SpacingReport, comma_decimal: bool) -> list[Finding]:
    """Rule 9: Pixel Aspect Ratio (0028,0034), PS3.3 C.7.6.3 (vertical\\horizontal)."""
    raw = report.pixel_aspect_ratio
    if not raw:
        return []  # absent, or present with no value
    label = attribute_label("PixelAspectRatio")
    par = report.pixel_aspect_ratio_values
    if par is None:
        return [
            finding(
                "PIXEL_ASPECT_RATIO_INVALID",
                Severity.WARNING,
                "9",
                "PixelAspectRatio",
                f"{label} value '{clip(raw)}' is not two positive integers (IS, VM 2; rule 9)",
            )
        ]
    if par[0] == par[1]:
        return [
            finding(
                "PIXEL_ASPECT_RATIO_PRESENT",
                Severity.WARNING,
                "9",
                "PixelAspectRatio",
                f"{label} '{clip(raw)}' is 1:1 and should be absent (rule 9, PS3.3 C.7.6.3)",
            )
        ]
    best = _best_spacing(report, comma_decimal)
    if best is None:
        return []  # PAR is the only description of the pixel shape: its purpose
    keyword, (row, column) = best
    ratio = par[0] / par[1]
    if agree(row / column, ratio, PAR_RTOL):
        return [
            finding(
                "PIXEL_ASPECT_RATIO_PRESENT",
                Severity.INFO,
                "9",
                "PixelAspectRatio",
                f"{label} '{clip(raw)}' is redundant with {attribute_label(keyword)} (rule 9)",
            )
        ]
    if keyword == _PS and agree(column / row, ratio, PAR_RTOL):
        return []  # the reverse agrees: rule 7 evidence, raised by decide
    return [
        finding(
            "PIXEL_ASPECT_RATIO_MISMATCH",
            Severity.WARNING,
            "9",
            "PixelAspectRatio",
            f"{label} '{clip(raw)}' disagrees with {attribute_label(keyword)} "
            f"{row:g}\\{column:g} in either order (rule 9)",
        )
    ]


def ancillary_findings(report: SpacingReport) -> list[Finding]:
    """Rule 1 for the other DS the node reads; an unusable value is then ignored."""
    attrs = [a for a in report.ds_attributes() if a.keyword in _ANCILLARY]
    findings = []
    for attr, frames in grouped(attrs):
        norm = attr.parsed
        if norm.is_empty or norm.numbers is not None:
            continue
        bad = next(p for p in norm.kept if p.number is None)
        findings.append(
            finding(
                "DS_INVALID",
                Severity.WARNING,
                "1",
                attr.keyword,
                f"{attr.label}{where_text(attr, frames)} value '{clip(attr.raw)}': "
                f"{_invalid_text(bad)}; ignored",
            )
        )
    return findings
