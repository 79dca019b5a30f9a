"""Result values of the per-series geometry and their JSON (the index's series geometry).

:class:`StackSummary` is the Z spacing of one stack (rules 24-30), :class:`StackReport` a
stack with its identity (rule 21) and :class:`SeriesGeometry` the whole series (rules 7, 18,
21-30); :meth:`SeriesGeometry.to_dict` is the ``geometry`` argument of
:func:`scp.series.summary.compose_series`. Each finding carries the number of slices (or
gaps) it concerns (:class:`CountedFinding`). Lengths are in mm, rounded to 1e-6 mm in JSON;
angles in degrees, rounded to 1e-4 degree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from scp.pipeline.model import Finding, Severity
from scp.series.stacks import StackIdentity

__all__ = [
    "CountedFinding",
    "SeriesGeometry",
    "StackReport",
    "StackSummary",
    "counted_finding",
    "format_mm",
    "round_optional",
]


@dataclass(frozen=True)
class CountedFinding:
    """A :class:`Finding` with the number of slices (or gaps) it concerns."""

    finding: Finding
    count: int = 1

    @property
    def code(self) -> str:
        return self.finding.code

    @property
    def severity(self) -> Severity:
        return self.finding.severity

    @property
    def message(self) -> str:
        return self.finding.message

    def to_dict(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "severity": self.severity.value,
            "count": self.count,
            "message": self.message,
        }


def counted_finding(
    code: str, severity: Severity, count: int, message: str, rule: str, tag: str
) -> CountedFinding:
    """A :class:`CountedFinding` of ``count`` slices (or gaps); ``tag`` is ``(gggg,eeee)``."""
    return CountedFinding(Finding(code, severity, message, rule=rule, tag=tag), count)


def format_mm(value: float) -> str:
    """A length in mm for a message: 6 significant digits, no unit."""
    return f"{value:.6g}"


def round_optional(value: float | None, digits: int = 6) -> float | None:
    """``value`` rounded to ``digits`` decimals for JSON, ``None`` stays ``None``."""
    return None if value is None else round(value, digits)


@dataclass(frozen=True)
class StackSummary:
    """Z spacing of one stack.

    ``spacing_mm`` is the median gap between consecutive distinct positions along the normal
    (rule 24), ``None`` when undefined: a single position (rule 29), duplicates that are not a
    clean 4D repeat (rule 27), or invalid geometry (rule 22). ``uniform`` follows rule 25.
    ``missing_slices`` counts slices missing per rule 26. ``repeats`` is the number of slices
    at each position: 1 without duplicates, r >= 2 for a clean 4D repeat, ``None`` otherwise.
    ``provisional``: the series is still receiving (rule 26).
    """

    slices: int
    positions: int
    spacing_mm: float | None = None
    min_mm: float | None = None
    max_mm: float | None = None
    uniform: bool | None = None
    missing_slices: int | None = None
    tilt_degrees: float | None = None
    provisional: bool = False
    distinct_gaps_mm: tuple[float, ...] = ()
    repeats: int | None = None
    slice_thickness_mm: float | None = None
    spacing_between_slices_mm: float | None = None
    findings: tuple[CountedFinding, ...] = ()

    @property
    def codes(self) -> list[str]:
        return sorted({f.code for f in self.findings})

    def slice_spacing_dict(self) -> dict[str, Any]:
        """The ``slice_spacing`` object of the series JSON."""
        return {
            "mm": round_optional(self.spacing_mm),
            "min_mm": round_optional(self.min_mm),
            "max_mm": round_optional(self.max_mm),
            "uniform": self.uniform,
            "missing_slices": self.missing_slices,
            "tilt_degrees": round_optional(self.tilt_degrees, 4),
            "provisional": self.provisional,
            "distinct_gaps_mm": [round_optional(g) for g in self.distinct_gaps_mm],
            "repeats": self.repeats,
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "slices": self.slices,
            "positions": self.positions,
            "slice_spacing": self.slice_spacing_dict(),
            "slice_thickness_mm": round_optional(self.slice_thickness_mm),
            "spacing_between_slices_mm": round_optional(self.spacing_between_slices_mm),
            "findings": [f.to_dict() for f in self.findings],
        }


@dataclass(frozen=True)
class StackReport:
    """One stack of a series: identity, summary, and whether it is the main stack."""

    identity: StackIdentity
    summary: StackSummary
    main: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {**self.identity.to_dict(), "main": self.main, **self.summary.to_dict()}


@dataclass(frozen=True)
class SeriesGeometry:
    """Geometry of a series: in-plane consensus, main-stack Z, all stacks, all findings."""

    pixel_spacing: tuple[float, float] | None
    pixel_spacing_consistent: bool
    stacks: tuple[StackReport, ...]
    findings: tuple[CountedFinding, ...]
    receiving: bool = False

    @property
    def main(self) -> StackReport | None:
        return next((s for s in self.stacks if s.main), None)

    @property
    def codes(self) -> list[str]:
        return sorted({f.code for f in self.findings})

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary for the index (see the module docstring)."""
        main = self.main
        summary = main.summary if main else StackSummary(0, 0, provisional=self.receiving)
        row, col = self.pixel_spacing if self.pixel_spacing else (None, None)
        return {
            "pixel_spacing": {
                "row_mm": round_optional(row),
                "column_mm": round_optional(col),
                "consistent": self.pixel_spacing_consistent,
            },
            "slice_spacing": summary.slice_spacing_dict(),
            "slice_thickness_mm": round_optional(summary.slice_thickness_mm),
            "spacing_between_slices_mm": round_optional(summary.spacing_between_slices_mm),
            "stacks": [s.to_dict() for s in self.stacks],
            "findings": [f.to_dict() for f in self.findings],
        }
