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
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence

from .ds import DS_PATTERN, DSKind, DSValue, NormalizedDS
from .model import ElementPath, Finding, Severity
from .policy import SpacingPolicy
from .report import DSAttr, SpacingReport, attribute_label, clip, tag_text

__all__ = [
    "ERMF_ATOL",
    "IOP_TOL",
    "MATCH_RTOL",
    "PAR_RTOL",
    "RD_RTOL",
    "close",
    "describe_path",
    "pixel_measures_problems",
    "reversed_pair",
    "same_pair",
    "usable_pair",
    "validate",
]

#: Two spacings are "equal" (rule 10 PS vs IPS, rule 7 reversal) within this
#: relative tolerance: DS text is often rounded to 6 significant digits.
MATCH_RTOL = 1e-4
#: Rule 7: Reconstruction Diameter / Columns against PS; PS is often written
#: with 3-4 digits, so the match is looser.
RD_RTOL = 5e-3
#: Rules 7 and 9: Pixel Aspect Ratio is a pair of integers approximating a ratio.
PAR_RTOL = 5e-3
#: Rule 13: |SID/SOD - ERMF| tolerance.
ERMF_ATOL = 1e-4
#: Rule 22: direction cosine length and orthogonality tolerance.
IOP_TOL = 1e-4
#: Ultrasound region deltas (FD) agree within this relative tolerance (rule 16).
REGION_RTOL = 1e-6

_PS = "PixelSpacing"
PAIR_KEYWORDS = frozenset({"PixelSpacing", "ImagerPixelSpacing", "NominalScannedPixelSpacing"})
_ANCILLARY = frozenset(
    {
        "SliceThickness",
        "SpacingBetweenSlices",
        "ReconstructionDiameter",
        "DistanceSourceToDetector",
        "DistanceSourceToPatient",
    }
)
_CALIBRATION_TYPES = frozenset({"GEOMETRY", "FIDUCIAL"})
_PS3_5 = "PS3.5 6.2"


# --------------------------------------------------------------------------- numeric helpers


def close(a: float, b: float, rtol: float) -> bool:
    """Relative closeness: |a - b| <= rtol * max(|a|, |b|)."""
    return abs(a - b) <= rtol * max(abs(a), abs(b))


def same_pair(p: Sequence[float], q: Sequence[float], rtol: float = MATCH_RTOL) -> bool:
    return close(p[0], q[0], rtol) and close(p[1], q[1], rtol)


def reversed_pair(p: Sequence[float], q: Sequence[float], rtol: float = MATCH_RTOL) -> bool:
    """``p`` is ``q`` in the other order, and the order matters (rule 7)."""
    return not same_pair(p, q, rtol) and same_pair(p, (q[1], q[0]), rtol)


def usable_pair(
    attr: DSAttr | None,
    rows: int | None,
    columns: int | None,
    comma_decimal: bool = False,
) -> tuple[float, float] | None:
    """(row, column) spacing when the value is VM 2, finite and > 0 (rule 5).

    A zero row value is tolerated when Rows = 1 and a zero column value when
    Columns = 1 (rule 5); the pair is still returned, with the 0.
    """
    if attr is None:
        return None
    numbers = attr.normalized(comma_decimal).numbers
    if numbers is None or len(numbers) != 2:
        return None
    if all(_positive_or_exempt(v, i, rows, columns) for i, v in enumerate(numbers)):
        return numbers[0], numbers[1]
    return None


def _positive_or_exempt(value: float, index: int, rows: int | None, columns: int | None) -> bool:
    if math.isfinite(value) and value > 0:
        return True
    exempt = rows == 1 if index == 0 else columns == 1
    return value == 0 and exempt


# --------------------------------------------------------------------------- paths and labels

_SEQUENCE_LABELS = {
    "SharedFunctionalGroupsSequence": "Shared Functional Groups Sequence (5200,9229)",
    "PerFrameFunctionalGroupsSequence": "Per-frame Functional Groups Sequence (5200,9230)",
    "PixelMeasuresSequence": "Pixel Measures Sequence (0028,9110)",
    "PlanePositionSequence": "Plane Position Sequence (0020,9113)",
    "PlaneOrientationSequence": "Plane Orientation Sequence (0020,9116)",
}


def _frames_text(frames: Sequence[int]) -> str:
    shown = ", ".join(str(f) for f in frames[:5])
    more = f" and {len(frames) - 5} more" if len(frames) > 5 else ""
    return f"items {shown}{more}" if len(frames) > 1 else f"item {frames[0]}"


def describe_path(path: ElementPath, frames: Sequence[int] | None = None) -> str:
    """Where an element sits, for messages: ``""`` at top level, else
    ``" in Per-frame Functional Groups Sequence (5200,9230) item 3 > ..."``.

    ``frames`` replaces the per-frame item index by a list of frames sharing
    the same value.
    """
    if len(path) <= 1:
        return ""
    parts: list[str] = []
    per_frame = path[0] == "PerFrameFunctionalGroupsSequence"
    for position, component in enumerate(path[:-1]):
        if isinstance(component, int):
            if position == 1 and per_frame:
                parts[-1] += f" {_frames_text(frames or [component])}"
            elif component != 0:  # single-item sequences: item 0 goes without saying
                parts[-1] += f" item {component}"
        else:
            parts.append(_SEQUENCE_LABELS.get(component, component))
    return " in " + " > ".join(parts)


def _finding(
    code: str, severity: Severity, rule: str, keyword: str | None, message: str
) -> Finding:
    tag = tag_text(keyword) if keyword else None
    return Finding(code=code, severity=severity, message=message, rule=rule, tag=tag)


def _grouped(attrs: Iterable[DSAttr]) -> list[tuple[DSAttr, list[int]]]:
    """Group per-frame occurrences by (location within the frame, raw text).

    Returns one representative per group and the per-frame item indexes, so
    a value repeated in 3000 frames yields one finding, not 3000.
    """
    groups: dict[tuple[object, ...], tuple[DSAttr, list[int]]] = {}
    for attr in attrs:
        per_frame = len(attr.path) > 2 and isinstance(attr.path[1], int)
        key = (attr.path[0], *attr.path[2:], attr.raw) if per_frame else (*attr.path, attr.raw)
        entry = groups.get(key)
        if entry is None:
            entry = groups[key] = (attr, [])
        if per_frame and attr.path[0] == "PerFrameFunctionalGroupsSequence":
            entry[1].append(int(attr.path[1]))
    return list(groups.values())


def _where(attr: DSAttr, frames: Sequence[int]) -> str:
    return describe_path(attr.path, frames or None)


# --------------------------------------------------------------------------- section A/B


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
            _finding("PIXEL_SPACING_INVALID", Severity.INVALID, rule, attr.keyword, message)
        )
    if vm not in (1, 2):
        findings.append(
            _finding(
                "PIXEL_SPACING_VM",
                Severity.INVALID,
                "3",
                attr.keyword,
                f"{label} value '{clip(attr.raw)}' has {vm} values; VM must be 2 (rule 3)",
            )
        )
    elif vm == 1:
        findings.append(
            _finding(
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
        if not _positive_or_exempt(value, index, report.rows, report.columns)
    ]
    if not bad:
        return []
    return [
        _finding(
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
        _finding(
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
    where = _where(attr, frames)
    findings = _syntax_findings(attr, norm, where)
    numbers = norm.numbers
    if numbers is None or norm.vm not in (1, 2):
        return findings
    findings += _value_findings(attr, numbers, where, report)
    if attr.keyword == _PS and not findings:
        findings += _range_findings(attr, numbers, where, report, policy)
    return findings


def _section_ab(report: SpacingReport, policy: SpacingPolicy, comma_decimal: bool) -> list[Finding]:
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
    for attr, frames in _grouped(measures):
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


def _aspect_ratio_findings(report: SpacingReport, comma_decimal: bool) -> list[Finding]:
    """Rule 9: Pixel Aspect Ratio (0028,0034), PS3.3 C.7.6.3 (vertical\\horizontal)."""
    raw = report.pixel_aspect_ratio
    if not raw:
        return []  # absent, or present with no value
    label = attribute_label("PixelAspectRatio")
    par = report.pixel_aspect_ratio_values
    if par is None:
        return [
            _finding(
                "PIXEL_ASPECT_RATIO_INVALID",
                Severity.WARNING,
                "9",
                "PixelAspectRatio",
                f"{label} value '{clip(raw)}' is not two positive integers (IS, VM 2; rule 9)",
            )
        ]
    if par[0] == par[1]:
        return [
            _finding(
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
    if close(row / column, ratio, PAR_RTOL):
        return [
            _finding(
                "PIXEL_ASPECT_RATIO_PRESENT",
                Severity.INFO,
                "9",
                "PixelAspectRatio",
                f"{label} '{clip(raw)}' is redundant with {attribute_label(keyword)} (rule 9)",
            )
        ]
    if keyword == _PS and close(column / row, ratio, PAR_RTOL):
        return []  # the reverse agrees: rule 7 evidence, raised by decide
    return [
        _finding(
            "PIXEL_ASPECT_RATIO_MISMATCH",
            Severity.WARNING,
            "9",
            "PixelAspectRatio",
            f"{label} '{clip(raw)}' disagrees with {attribute_label(keyword)} "
            f"{row:g}\\{column:g} in either order (rule 9)",
        )
    ]


# --------------------------------------------------------------------------- section C


def _calibration_findings(report: SpacingReport, comma_decimal: bool) -> list[Finding]:
    """Rules 10 and 11 (PS3.3 10.7.1.1, 10.7.1.2, Table 10-10)."""
    findings: list[Finding] = []
    psct = report.calibration_type or None
    psct_label = attribute_label("PixelSpacingCalibrationType")
    if psct is not None:
        if psct not in _CALIBRATION_TYPES:
            findings.append(
                _finding(
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
                _finding(
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
            _finding(
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
            _finding(
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


def _ermf_findings(report: SpacingReport) -> list[Finding]:
    """Rule 13: ERMF (0018,1114) > 1 and consistent with SID/SOD (PS3.3 C.8.11.5)."""
    attr = report.ermf
    if attr is None or attr.parsed.is_empty:
        return []
    ermf = attr.single
    if ermf is None or not ermf > 1.0:
        return [
            _finding(
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
        _finding(
            "ERMF_INCONSISTENT",
            Severity.WARNING,
            "13",
            attr.keyword,
            f"{attr.label} {ermf:g} differs from {attribute_label('DistanceSourceToDetector')} "
            f"/ {attribute_label('DistanceSourceToPatient')} = {sid:g}/{sod:g} = {ratio:.6g} "
            f"by more than {ERMF_ATOL:g} (rule 13)",
        )
    ]


# --------------------------------------------------------------------------- section D


def spatial_regions_agree(report: SpacingReport) -> bool | None:
    """``None`` without spatial regions, else whether they all agree (rule 16)."""
    regions = [r for r in report.ultrasound_regions or () if r.is_spatial]
    if not regions:
        return None
    first = regions[0]
    return all(
        close(r.row_mm or 0.0, first.row_mm or 0.0, REGION_RTOL)
        and close(r.column_mm or 0.0, first.column_mm or 0.0, REGION_RTOL)
        for r in regions[1:]
    )


def _ultrasound_findings(report: SpacingReport) -> list[Finding]:
    """Rules 15-16: Sequence of Ultrasound Regions (0018,6011), PS3.3 C.8.5.5."""
    if spatial_regions_agree(report) is not False:
        return []
    listed = "; ".join(
        f"region {r.index}: {r.row_mm:.6g}\\{r.column_mm:.6g} mm"
        for r in report.ultrasound_regions or ()
        if r.is_spatial
    )
    return [
        _finding(
            "US_REGIONS_DIFFER",
            Severity.WARNING,
            "16",
            "SequenceOfUltrasoundRegions",
            f"{attribute_label('SequenceOfUltrasoundRegions')} holds spatial regions with "
            f"different deltas ({listed}); not collapsed into one spacing (rule 16)",
        )
    ]


# --------------------------------------------------------------------------- section E


def pixel_measures_problems(report: SpacingReport) -> list[str]:
    """Why the Pixel Measures Sequence (0028,9110) is malformed (rule 17); [] if fine.

    PS3.3 C.7.6.16.2.1: exactly one item, in the Shared Functional Groups or in
    every Per-frame Functional Groups item, not both.
    """
    shared = [g for g in report.shared_groups if g.pixel_measures is not None]
    frames = [g for g in report.per_frame_groups if g.pixel_measures is not None]
    problems: list[str] = []
    if shared and frames:
        problems.append("present in both the Shared and the Per-frame Functional Groups")
    if shared and len(report.shared_groups) != 1:
        problems.append(
            f"Shared Functional Groups Sequence holds {len(report.shared_groups)} items"
        )
    if frames and not shared and len(frames) != len(report.per_frame_groups):
        missing = len(report.per_frame_groups) - len(frames)
        problems.append(f"missing in {missing} of {len(report.per_frame_groups)} per-frame items")
    counts = sorted(
        {g.pixel_measures.item_count for g in (*shared, *frames) if g.pixel_measures is not None}
        - {1}
    )
    if counts:
        problems.append(f"holds {' or '.join(str(c) for c in counts)} items instead of 1")
    return problems


def _multiframe_findings(report: SpacingReport) -> list[Finding]:
    findings: list[Finding] = []
    label = attribute_label("PixelMeasuresSequence")
    problems = pixel_measures_problems(report)
    if problems:
        findings.append(
            _finding(
                "PIXEL_MEASURES_MALFORMED",
                Severity.INVALID,
                "17",
                "PixelMeasuresSequence",
                f"{label} is malformed: {'; '.join(problems)}; invalid geometry "
                "(rule 17, PS3.3 C.7.6.16.2.1)",
            )
        )
    values: dict[tuple[float, ...] | str, list[int]] = defaultdict(list)
    for index, group in enumerate(report.per_frame_groups):
        first = group.pixel_measures.first if group.pixel_measures is not None else None
        if first is None:
            continue
        numbers = first.numbers
        values[numbers if numbers is not None else first.raw].append(index)
    if len(values) > 1:
        shown = "; ".join(
            f"{_show(key)} in {_frames_text(frames)}" for key, frames in list(values.items())[:4]
        )
        findings.append(
            _finding(
                "PIXEL_MEASURES_VARY",
                Severity.WARNING,
                "18",
                _PS,
                f"{attribute_label(_PS)} in the per-frame {label} takes {len(values)} "
                f"different values ({shown}); spacing is reported per frame (rule 18)",
            )
        )
    return findings


def _show(key: tuple[float, ...] | str) -> str:
    return clip(key) if isinstance(key, str) else "\\".join(f"{v:g}" for v in key)


# --------------------------------------------------------------------------- presence, F


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


def _presence_findings(report: SpacingReport) -> list[Finding]:
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
            _finding(
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
            _finding(
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
        _finding(
            "PIXEL_SPACING_MISSING",
            severity,
            "5",
            _PS,
            f"{ps_label} is {state} and no {attribute_label('PixelMeasuresSequence')} gives it "
            f"for this {report.modality or 'unknown modality'} image ({why}); "
            "no spacing is assumed, never 1.0 (rule 5)",
        )
    ]


# --------------------------------------------------------------------------- rule 22, others


def _orientation_problem(numbers: Sequence[float] | None) -> str | None:
    if numbers is None or len(numbers) != 6:
        return "is not six numbers"
    row, column = numbers[:3], numbers[3:]
    for name, vector in (("row", row), ("column", column)):
        length = math.sqrt(sum(v * v for v in vector))
        if abs(length - 1.0) > IOP_TOL:
            return f"{name} direction cosine has length {length:.6g}, not 1 within {IOP_TOL:g}"
    dot = sum(a * b for a, b in zip(row, column, strict=True))
    if abs(dot) > IOP_TOL:
        return f"row and column cosines are not orthogonal (dot product {dot:.3g})"
    return None


def _geometry_findings(report: SpacingReport) -> list[Finding]:
    """Rule 22 per instance: IOP (0020,0037) unit and orthogonal; IPP (0020,0032) 3 numbers."""
    orientations = [report.image_orientation] + [
        g.orientation for g in (*report.shared_groups, *report.per_frame_groups)
    ]
    positions = [report.image_position] + [
        g.position for g in (*report.shared_groups, *report.per_frame_groups)
    ]
    findings: list[Finding] = []
    present_o = [a for a in orientations if a is not None and not a.parsed.is_empty]
    for attr, frames in _grouped(present_o):
        problem = _orientation_problem(attr.numbers)
        if problem is not None:
            findings.append(_geometry(attr, frames, problem, "22"))
    present_p = [a for a in positions if a is not None and not a.parsed.is_empty]
    for attr, frames in _grouped(present_p):
        numbers = attr.numbers
        if numbers is None or len(numbers) != 3:
            findings.append(_geometry(attr, frames, "is not three numbers", "22"))
    return findings


def _geometry(attr: DSAttr, frames: Sequence[int], problem: str, rule: str) -> Finding:
    return _finding(
        "GEOMETRY_INVALID",
        Severity.INVALID,
        rule,
        attr.keyword,
        f"{attr.label}{_where(attr, frames)} value '{clip(attr.raw)}' {problem}: "
        f"invalid geometry (rule {rule}, PS3.3 C.7.6.2.1.1)",
    )


def _ancillary_findings(report: SpacingReport) -> list[Finding]:
    """Rule 1 for the other DS the node reads; an unusable value is then ignored."""
    attrs = [a for a in report.ds_attributes() if a.keyword in _ANCILLARY]
    findings = []
    for attr, frames in _grouped(attrs):
        norm = attr.parsed
        if norm.is_empty or norm.numbers is not None:
            continue
        bad = next(p for p in norm.kept if p.number is None)
        findings.append(
            _finding(
                "DS_INVALID",
                Severity.WARNING,
                "1",
                attr.keyword,
                f"{attr.label}{_where(attr, frames)} value '{clip(attr.raw)}': "
                f"{_invalid_text(bad)}; ignored",
            )
        )
    return findings


# --------------------------------------------------------------------------- entry point


def validate(
    report: SpacingReport, policy: SpacingPolicy, *, comma_decimal: bool = False
) -> list[Finding]:
    """Every rule check of sections A-F and rule 22 on the values as received.

    ``comma_decimal`` is true when a matching swap rule declares that the
    sending device writes comma decimals: such values are then numbers
    (decide.py corrects them) instead of invalid.
    """
    findings = _section_ab(report, policy, comma_decimal)
    findings += _aspect_ratio_findings(report, comma_decimal)
    findings += _calibration_findings(report, comma_decimal)
    findings += _ermf_findings(report)
    findings += _ultrasound_findings(report)
    findings += _multiframe_findings(report)
    findings += _presence_findings(report)
    findings += _geometry_findings(report)
    findings += _ancillary_findings(report)
    return findings
