"""Typed results shared by every stage of the spacing pipeline.

A stage never talks to the network or the database: it reads a header
(:class:`pydicom.Dataset` read with ``stop_before_pixels``) and returns
findings and edits.  Codes and severities follow ``spacing-rules.md``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal


class Severity(StrEnum):
    """Severity words of the spacing rulebook (introduction)."""

    INVALID = "invalid"
    """The value cannot be used for measurement."""
    CORRECTED = "corrected"
    """The node changed the instance and recorded the original."""
    WARNING = "warning"
    """Kept as received, flagged."""
    INFO = "info"


#: Worst first: used to compute an instance verdict.
SEVERITY_ORDER: tuple[Severity, ...] = (
    Severity.INVALID,
    Severity.CORRECTED,
    Severity.WARNING,
    Severity.INFO,
)


@dataclass(frozen=True)
class Finding:
    """One observation about an instance's spacing.

    ``message`` cites the rule (e.g. ``rule 5``) and the attribute tag
    (e.g. ``Pixel Spacing (0028,0030)``).
    """

    code: str
    severity: Severity
    message: str
    rule: str | None = None  # rulebook rule number, e.g. "5"
    tag: str | None = None  # e.g. "(0028,0030)"


#: A path to a data element: keywords and sequence item indexes, e.g.
#: ``("PixelSpacing",)`` or
#: ``("SharedFunctionalGroupsSequence", 0, "PixelMeasuresSequence", 0, "PixelSpacing")``.
ElementPath = tuple[str | int, ...]

#: Reason for the Attribute Modification (0400,0565), PS3.3 C.12.1.1.9.2.
ModificationReason = Literal["CORRECT", "COERCE"]


@dataclass(frozen=True)
class Edit:
    """A change the node makes to a received instance.

    ``old`` and ``new`` are the raw Decimal String text as stored in the
    element (values joined by ``\\``); ``new`` of ``None`` deletes the element.
    """

    code: str  # the finding code that caused the edit
    reason: ModificationReason
    path: ElementPath
    old: str | None
    new: str | None

    @property
    def attribute(self) -> str:
        """The keyword of the edited element (last path component)."""
        return str(self.path[-1])


SpacingSource = Literal[
    "PixelSpacing",
    "PixelMeasuresSequence",
    "ImagerPixelSpacing",
    "ImagerPixelSpacing/ERMF",
    "NominalScannedPixelSpacing",
    "UltrasoundRegion",
]


@dataclass(frozen=True)
class EffectiveSpacing:
    """The in-plane spacing the node believes, in mm, and where it came from.

    ``row_mm`` is the distance between rows (first Pixel Spacing value, rule 6).
    All ``None`` when no usable spacing exists (never defaulted to 1.0, rule 5).
    """

    row_mm: float | None = None
    column_mm: float | None = None
    source: SpacingSource | None = None
    calibration: str | None = None  # rule 14 label, e.g. "at detector"


@dataclass(frozen=True)
class InstanceContext:
    """What the pipeline knows about an instance besides its header."""

    calling_ae_title: str = ""
    called_ae_title: str = ""
    #: The node's own AE title: the Modifying System (0400,0563) of its corrections.
    node_ae_title: str = ""


@dataclass
class PipelineResult:
    """Everything the pipeline decided about one instance."""

    findings: list[Finding] = field(default_factory=list)
    edits: list[Edit] = field(default_factory=list)
    effective: EffectiveSpacing = field(default_factory=EffectiveSpacing)
    report: object | None = None  # the typed SpacingReport the stages gathered

    @property
    def verdict(self) -> str:
        """Worst severity among the findings, or ``"ok"``."""
        present = {f.severity for f in self.findings}
        for sev in SEVERITY_ORDER:
            if sev in present:
                return sev.value
        return "ok"

    @property
    def codes(self) -> list[str]:
        return sorted({f.code for f in self.findings})

    @property
    def changed(self) -> bool:
        return bool(self.edits)
