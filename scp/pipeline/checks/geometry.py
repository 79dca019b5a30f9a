"""Rule 22 per instance: Image Orientation/Position (Patient) sanity.

Image Orientation (Patient) (0020,0037) is two unit, orthogonal direction
cosines within ``IOP_TOL``; Image Position (Patient) (0020,0032) is three
numbers (PS3.3 C.7.6.2.1.1), top level and in the Plane Orientation
(0020,9116) / Plane Position (0020,9113) Sequences of the functional groups
(C.7.6.16.2.3-4).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from ..compare import IOP_TOL
from ..labels import clip
from ..messages import finding, grouped, where_text
from ..model import Finding, Severity
from ..raw import DSAttr
from ..report import SpacingReport

__all__ = ["geometry_findings"]


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


def geometry_findings(report: SpacingReport) -> list[Finding]:
    """Rule 22 per instance: IOP (0020,0037) unit and orthogonal; IPP (0020,0032) 3 numbers."""
    orientations = [report.image_orientation] + [
        g.orientation for g in (*report.shared_groups, *report.per_frame_groups)
    ]
    positions = [report.image_position] + [
        g.position for g in (*report.shared_groups, *report.per_frame_groups)
    ]
    findings: list[Finding] = []
    present_o = [a for a in orientations if a is not None and not a.parsed.is_empty]
    for attr, frames in grouped(present_o):
        problem = _orientation_problem(attr.numbers)
        if problem is not None:
            findings.append(_geometry(attr, frames, problem, "22"))
    present_p = [a for a in positions if a is not None and not a.parsed.is_empty]
    for attr, frames in grouped(present_p):
        numbers = attr.numbers
        if numbers is None or len(numbers) != 3:
            findings.append(_geometry(attr, frames, "is not three numbers", "22"))
    return findings


def _geometry(attr: DSAttr, frames: Sequence[int], problem: str, rule: str) -> Finding:
    return finding(
        "GEOMETRY_INVALID",
        Severity.INVALID,
        rule,
        attr.keyword,
        f"{attr.label}{where_text(attr, frames)} value '{clip(attr.raw)}' {problem}: "
        f"invalid geometry (rule {rule}, PS3.3 C.7.6.2.1.1)",
    )
