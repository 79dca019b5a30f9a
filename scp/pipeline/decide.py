"""Decide the edits the node makes to an instance (rules 1, 2, 3 and 7).

Edits, in the order they must be applied (edits of one path are chained: the
``old`` of a later edit is the ``new`` of the earlier one):

1. Normalization, reason ``COERCE`` (the VR is repaired, the number kept):
   over-long values reformatted (rule 2), trailing empty values dropped
   (rule 3), comma decimals fixed when a matching swap rule has
   ``comma_decimal=True`` (rule 1).  Applied to every DS the pipeline reads;
   code ``PIXEL_SPACING_REFORMATTED`` (or ``PIXEL_SPACING_VM`` when only a
   trailing empty value is dropped) for Pixel Spacing (0028,0030), Imager
   Pixel Spacing (0018,1164) and Nominal Scanned Pixel Spacing (0018,2010),
   ``DS_REFORMATTED`` for the others.  A value with any unusable part is left
   alone: the node never guesses a number.
   A DS element written with another VR (Pixel Spacing as ``UT``, ``LO``, ``UN``...,
   rule 33) is read leniently and reported, code ``SPACING_VR_WRONG`` (warning, naming the
   VR found and PS3.6's); when its number is clear it is coerced to DS (an edit even when
   the text stays the same: the element is rewritten with VR DS, the original recorded in
   Nonconforming Modified Attributes Sequence (0400,0551)).
2. Swap at the perimeter, reason ``CORRECT``, code ``PIXEL_SPACING_SWAPPED``:
   every attribute listed by a matching :class:`~scp.pipeline.policy.SwapRule`
   -- Pixel Spacing also in every Pixel Measures item, shared and per-frame --
   when its two values differ (rule 7).
3. Rule 7 evidence of a reversed Pixel Spacing, checked on the values after
   1 and 2: ``PIXEL_SPACING_SUSPECT_REVERSED`` (warning); a swap only when
   ``policy.on_suspect_reversed == "swap"`` and no evidence supports the
   current order.

Reading of rule 7's CT evidence: Pixel Spacing is row spacing\\column spacing
(PS3.3 10.7.1.3), and the column spacing -- the distance between adjacent
columns, i.e. the horizontal size of a pixel -- times Columns (0028,0011) is
the horizontal field of view.  For a CT image that is the Reconstruction
Diameter (0018,1100) (CT Image Module, PS3.3 C.8.2.1).  So RD / Columns
should equal PS[1]; when it equals PS[0] and not PS[1], the values are
reversed.  When it equals PS[1] and not PS[0] it supports the order received.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from functools import lru_cache

from pydicom.datadict import dictionary_VM, tag_for_keyword

from .compare import (
    PAIR_KEYWORDS,
    PAR_RTOL,
    RD_RTOL,
    agree,
    anisotropic,
    group_values,
    reversed_pair,
    same_pair,
)
from .ds import NormalizedDS, normalize_ds
from .labels import attribute_label, clip, tag_text
from .messages import describe_path
from .model import Edit, ElementPath, Finding, InstanceContext, ModificationReason, Severity
from .policy import SWAPPABLE_ATTRIBUTES, SpacingPolicy, SwapRule
from .raw import DSAttr
from .report import SpacingReport

__all__ = ["Decision", "decide", "matching_rules", "reversal_evidence", "rule_matches"]

_PS = "PixelSpacing"


@dataclass(frozen=True)
class Decision:
    """What decide() chose: edits (in application order) and the findings
    that record them (severity ``corrected``) or flag a suspect order."""

    edits: tuple[Edit, ...] = ()
    findings: tuple[Finding, ...] = ()


# --------------------------------------------------------------------------- swap rules


def rule_matches(rule: SwapRule, report: SpacingReport, ctx: InstanceContext) -> bool:
    """All ``rule.match`` patterns glob-match (case-sensitive ``fnmatchcase``).

    Header values are compared with their padding stripped; an absent element
    is the empty string (so only ``*`` matches it).  A rule with no patterns,
    or with a key the node does not know, matches nothing: a configuration
    mistake must not swap every instance.
    """
    if not rule.match:
        return False
    for key, pattern in rule.match.items():
        if key == "calling_ae_title":
            value = ctx.calling_ae_title.strip()
        elif key in report.header:
            value = report.header[key]
        else:
            return False
        if not fnmatchcase(value, pattern):
            return False
    return True


def matching_rules(
    report: SpacingReport, ctx: InstanceContext, policy: SpacingPolicy
) -> tuple[SwapRule, ...]:
    return tuple(rule for rule in policy.swap_rules if rule_matches(rule, report, ctx))


# --------------------------------------------------------------------------- normalization


def _finding(code: str, severity: Severity, rule: str, keyword: str, message: str) -> Finding:
    return Finding(code=code, severity=severity, message=message, rule=rule, tag=tag_text(keyword))


def _normalization_code(attr: DSAttr, comma: bool) -> tuple[str, str]:
    """(edit code, rule) for a normalization edit of ``attr``."""
    norm = attr.normalized(comma)
    if attr.keyword not in PAIR_KEYWORDS:
        return "DS_REFORMATTED", "2" if norm.reformatted else "3"
    if norm.comma_fixed:
        return "PIXEL_SPACING_REFORMATTED", "1"
    if norm.reformatted:
        return "PIXEL_SPACING_REFORMATTED", "2"
    return "PIXEL_SPACING_VM", "3"


def _what_changed(attr: DSAttr, comma: bool) -> str:
    norm = attr.normalized(comma)
    changes = []
    if norm.comma_fixed:
        changes.append("comma decimal mark replaced by a period (rule 1, swap rule)")
    if norm.reformatted:
        longest = max(len(p.text) for p in norm.reformatted)
        changes.append(f"value of {longest} bytes reformatted to at most 16 (rule 2, PS3.5 6.2)")
    if norm.trailing_empty:
        changes.append("trailing empty value dropped (rule 3)")
    return "; ".join(changes)


def _normalization(
    report: SpacingReport, comma: bool
) -> tuple[list[Edit], list[Finding], dict[tuple[str | int, ...], str]]:
    edits: list[Edit] = []
    current: dict[tuple[str | int, ...], str] = {}
    groups: dict[tuple[object, ...], list[tuple[DSAttr, int | None]]] = {}
    for attr in report.ds_attributes():
        use_comma = comma and attr.keyword in PAIR_KEYWORDS
        norm = attr.normalized(use_comma)
        if not norm.needs_edit or norm.text is None or not _vm_conforms(attr.keyword, norm):
            continue
        code, _rule = _normalization_code(attr, use_comma)
        edits.append(_edit(code, "COERCE", attr, attr.raw, norm.text))
        current[attr.path] = norm.text
        frame = attr.path[1] if attr.path[0] == "PerFrameFunctionalGroupsSequence" else None
        key = (attr.path[0], *attr.path[2:], attr.raw) if frame is not None else (attr.path,)
        groups.setdefault(key, []).append((attr, frame if isinstance(frame, int) else None))
    findings = []
    for members in groups.values():
        attr = members[0][0]
        use_comma = comma and attr.keyword in PAIR_KEYWORDS
        code, rule = _normalization_code(attr, use_comma)
        frames = [f for _, f in members if f is not None]
        findings.append(
            _finding(
                code,
                Severity.CORRECTED,
                rule,
                attr.keyword,
                f"{attribute_label(attr.keyword)}{describe_path(attr.path, frames or None)} "
                f"'{clip(attr.raw)}' -> '{clip(attr.normalized(use_comma).text or '')}': "
                f"{_what_changed(attr, use_comma)}",
            )
        )
    return edits, findings, current


def _vr_coercions(
    report: SpacingReport, comma: bool, current: dict[tuple[str | int, ...], str]
) -> tuple[list[Edit], list[Finding]]:
    """Rule 33: spacing elements written with another VR than PS3.6's (DS; IS for Pixel
    Aspect Ratio); coerced to that VR when the number is clear (a normalization edit of
    the same element already rewrites it with its VR)."""
    edits: list[Edit] = []
    groups: dict[tuple[str, str, bool], list[ElementPath]] = {}
    for attr in report.ds_attributes():
        if attr.vr is None or attr.vr == "DS":
            continue
        norm = attr.normalized(comma and attr.keyword in PAIR_KEYWORDS)
        clear = norm.text is not None and norm.vm > 0 and _vm_conforms(attr.keyword, norm)
        if clear and attr.path not in current:
            assert norm.text is not None
            edits.append(_edit("SPACING_VR_WRONG", "COERCE", attr, attr.raw, norm.text))
            current[attr.path] = norm.text
        groups.setdefault((attr.keyword, attr.vr, clear), []).append(attr.path)
    par_vr, par = report.pixel_aspect_ratio_vr, report.pixel_aspect_ratio
    if par_vr not in (None, "IS") and par is not None:
        values = report.pixel_aspect_ratio_values
        if values is not None:
            new = f"{values[0]}\\{values[1]}"
            edits.append(Edit("SPACING_VR_WRONG", "COERCE", ("PixelAspectRatio",), par, new))
        groups.setdefault(("PixelAspectRatio", str(par_vr), values is not None), []).append(
            ("PixelAspectRatio",)
        )
    return edits, [_vr_finding(*key, paths) for key, paths in groups.items()]


def _vr_finding(keyword: str, vr: str, clear: bool, paths: list[ElementPath]) -> Finding:
    expected = "IS" if keyword == "PixelAspectRatio" else "DS"
    frames = [
        p[1] for p in paths if p[0] == "PerFrameFunctionalGroupsSequence" and isinstance(p[1], int)
    ]
    outcome = (
        f"the number was read leniently and the element coerced to {expected} (original in "
        "Nonconforming Modified Attributes Sequence (0400,0551))"
        if clear
        else "the value is not a clear number: kept as received"
    )
    return _finding(
        "SPACING_VR_WRONG",
        Severity.WARNING,
        "33",
        keyword,
        f"{attribute_label(keyword)}{describe_path(paths[0], frames or None)} is written with "
        f"VR {vr}, not {expected} as PS3.6 defines it; {outcome} (rule 33)",
    )


def _vm_conforms(keyword: str, norm: NormalizedDS) -> bool:
    """Whether the normalized value has the VM of PS3.6 (or is empty).

    A normalization that still leaves a nonconforming VM (``0.5\\`` -> ``0.5``
    for a VM 2 attribute) is not made: the element would stay nonconforming,
    and the edit would be refused when applied.
    """
    vm = _dictionary_vm(keyword)
    return norm.vm == 0 or not vm.isdigit() or norm.vm == int(vm)


@lru_cache(maxsize=64)
def _dictionary_vm(keyword: str) -> str:
    tag = tag_for_keyword(keyword)
    return dictionary_VM(tag) if tag is not None else ""


def _edit(code: str, reason: ModificationReason, attr: DSAttr, old: str, new: str) -> Edit:
    return Edit(code=code, reason=reason, path=attr.path, old=old, new=new)


# --------------------------------------------------------------------------- swaps


def _swap_targets(report: SpacingReport, keyword: str) -> list[DSAttr]:
    if keyword == _PS:
        targets = [report.pixel_spacing]
        targets += [a for pm in report.pixel_measures for a in pm.pixel_spacing]
        return [a for a in targets if a is not None]
    if keyword == "ImagerPixelSpacing" and report.imager_pixel_spacing is not None:
        return [report.imager_pixel_spacing]
    return []


def _swapped(text: str) -> str | None:
    """``a\\b`` -> ``b\\a`` when both are usable numbers that differ, else ``None``."""
    norm = normalize_ds(text)
    if norm.values is None or norm.numbers is None or len(norm.values) != 2:
        return None
    if norm.numbers[0] == norm.numbers[1]:
        return None  # swapping equal values is no change
    return f"{norm.values[1]}\\{norm.values[0]}"


def _rule_swaps(
    report: SpacingReport,
    rules: Sequence[SwapRule],
    current: dict[tuple[str | int, ...], str],
) -> tuple[list[Edit], list[Finding]]:
    edits: list[Edit] = []
    findings: list[Finding] = []
    done: set[str] = set()
    for rule in rules:
        for keyword in rule.attributes:
            if keyword in done or keyword not in SWAPPABLE_ATTRIBUTES:
                continue
            done.add(keyword)  # two rules naming one attribute must not swap it back
            swapped = []
            for attr in _swap_targets(report, keyword):
                old = current.get(attr.path, attr.raw)
                new = _swapped(old)
                if new is None:
                    continue
                edits.append(_edit("PIXEL_SPACING_SWAPPED", "CORRECT", attr, old, new))
                current[attr.path] = new
                swapped.append((attr, old, new))
            if swapped:
                findings.append(_swap_finding(keyword, swapped, f"swap rule '{rule.name}'"))
    return edits, findings


def _swap_finding(keyword: str, swapped: list[tuple[DSAttr, str, str]], why: str) -> Finding:
    attr, old, new = swapped[0]
    where = describe_path(attr.path)
    more = f" (and {len(swapped) - 1} more Pixel Measures items)" if len(swapped) > 1 else ""
    return _finding(
        "PIXEL_SPACING_SWAPPED",
        Severity.CORRECTED,
        "7",
        keyword,
        f"{attribute_label(keyword)}{where} '{clip(old)}' -> '{clip(new)}'{more}: "
        f"values swapped to row\\column order by {why} (rule 7, PS3.3 10.7.1.3)",
    )


# --------------------------------------------------------------------------- rule 7 evidence


def _uniform_measures(report: SpacingReport) -> tuple[float, float] | None:
    pairs = [a.pair for pm in report.pixel_measures for a in pm.pixel_spacing if a is not None]
    if not pairs or any(p is None for p in pairs):
        return None
    counts: dict[tuple[float, float], int] = {}
    for pair in pairs:
        assert pair is not None
        counts[pair] = counts.get(pair, 0) + 1
    groups = group_values(counts.items(), {p: p for p in counts})
    return groups[0][0][0] if len(groups) == 1 else None


def _compare(
    ps: tuple[float, float], other: tuple[float, float] | None, label: str
) -> tuple[list[str], list[str]]:
    if other is None or not anisotropic(other):
        return [], []
    shown = f"{label} {other[0]:g}\\{other[1]:g}"
    if reversed_pair(ps, other):
        return [f"PS is the reverse of {shown}"], []
    if same_pair(ps, other):
        return [], [f"PS equals {shown}"]
    return [], []


def _reconstruction(report: SpacingReport, ps: tuple[float, float]) -> tuple[list[str], list[str]]:
    rd_attr = report.reconstruction_diameter
    rd = rd_attr.single if rd_attr is not None else None
    if report.modality != "CT" or rd is None or rd <= 0 or not report.columns:
        return [], []
    per_column = rd / report.columns
    first, second = agree(per_column, ps[0], RD_RTOL), agree(per_column, ps[1], RD_RTOL)
    shown = (
        f"{attribute_label('ReconstructionDiameter')} / {attribute_label('Columns')} = "
        f"{rd:g}/{report.columns} = {per_column:.6g} mm"
    )
    if first and not second:
        return [f"{shown} matches the first value (row spacing), not the column spacing"], []
    if second and not first:
        return [], [f"{shown} matches the column spacing"]
    return [], []


def _aspect(report: SpacingReport, ps: tuple[float, float]) -> tuple[list[str], list[str]]:
    par = report.pixel_aspect_ratio_values
    if par is None or par[0] == par[1]:
        return [], []
    ratio = par[0] / par[1]
    shown = f"{attribute_label('PixelAspectRatio')} {par[0]}\\{par[1]}"
    if agree(ps[0] / ps[1], ratio, PAR_RTOL):
        return [], [f"PS agrees with {shown}"]
    if agree(ps[1] / ps[0], ratio, PAR_RTOL):
        return [f"PS disagrees with {shown} but its reverse agrees"], []
    return [], []


def reversal_evidence(report: SpacingReport) -> tuple[list[str], list[str]]:
    """Rule 7 evidence about the top-level Pixel Spacing: (reversed, as received).

    Only an anisotropic, valid PS can be judged.  Evidence for reversal:
    RD/Columns matches PS[0] not PS[1] (CT); PS is the reverse of IPS, NSPS or
    the Pixel Measures; PS disagrees with Pixel Aspect Ratio but its reverse
    agrees.  The same sources agreeing with PS count against.  The series-level
    evidence (reverse of every other instance) is left to the series index.
    """
    attr = report.pixel_spacing
    ps = attr.pair if attr is not None else None
    if ps is None or ps[0] <= 0 or ps[1] <= 0 or not anisotropic(ps):
        return [], []
    checks = (
        _reconstruction(report, ps),
        _compare(ps, _pair(report.imager_pixel_spacing), attribute_label("ImagerPixelSpacing")),
        _compare(
            ps,
            _pair(report.nominal_scanned_pixel_spacing),
            attribute_label("NominalScannedPixelSpacing"),
        ),
        _compare(ps, _uniform_measures(report), attribute_label("PixelMeasuresSequence")),
        _aspect(report, ps),
    )
    evidence = [e for found, _ in checks for e in found]
    against = [e for _, found in checks for e in found]
    return evidence, against


def _pair(attr: DSAttr | None) -> tuple[float, float] | None:
    return attr.pair if attr is not None else None


def _suspect(
    report: SpacingReport,
    policy: SpacingPolicy,
    rule_swapped: bool,
) -> tuple[list[Edit], list[Finding]]:
    evidence, against = reversal_evidence(report)
    attr = report.pixel_spacing
    if not evidence or attr is None:
        return [], []
    label = attribute_label(_PS)
    context = " after a configured swap" if rule_swapped else ""
    counter = f"; against: {'; '.join(against)}" if against else ""
    findings = [
        _finding(
            "PIXEL_SPACING_SUSPECT_REVERSED",
            Severity.WARNING,
            "7",
            _PS,
            f"{label} '{clip(attr.raw)}'{context} looks reversed: {'; '.join(evidence)}{counter} "
            "(rule 7, PS3.3 10.7.1.3)",
        )
    ]
    if policy.on_suspect_reversed != "swap" or against or rule_swapped:
        return [], findings
    new = _swapped(attr.raw)
    if new is None:
        return [], findings
    edit = _edit("PIXEL_SPACING_SWAPPED", "CORRECT", attr, attr.raw, new)
    findings.append(_swap_finding(_PS, [(attr, attr.raw, new)], "site policy on evidence"))
    return [edit], findings


# --------------------------------------------------------------------------- entry point


def decide(
    report: SpacingReport,
    ctx: InstanceContext,
    policy: SpacingPolicy,
    *,
    rules: Iterable[SwapRule] | None = None,
) -> Decision:
    """Normalization, configured swaps, then rule 7 evidence (see module doc).

    ``rules`` are the swap rules matching this instance (computed when not
    given).
    """
    matched = tuple(rules) if rules is not None else matching_rules(report, ctx, policy)
    comma = any(rule.comma_decimal for rule in matched)
    edits, findings, current = _normalization(report, comma)
    vr_edits, vr_findings = _vr_coercions(report, comma, current)
    edits += vr_edits
    findings += vr_findings
    swap_edits, swap_findings = _rule_swaps(report, matched, current)
    edits += swap_edits
    findings += swap_findings
    rule_swapped = any(e.path == (_PS,) for e in swap_edits)
    suspect_edits, suspect_findings = _suspect(report.with_edits(edits), policy, rule_swapped)
    return Decision(tuple(edits + suspect_edits), tuple(findings + suspect_findings))
