"""The per-instance spacing pipeline: gather -> validate -> decide -> effective.

Pure functions: no network, no database, no file writes.  The dataset is read
(never modified, never copied, pixel data never touched); the caller applies
the returned :class:`Edit` objects in order.
"""

from __future__ import annotations

from pydicom.dataset import Dataset

from .decide import Decision, decide, matching_rules, reversal_evidence, rule_matches
from .ds import (
    DSKind,
    NormalizedDS,
    classify_ds,
    format_ds,
    normalize_ds,
    parse_ds,
    split_ds,
)
from .effective import calibration_label, effective_spacing
from .model import (
    Edit,
    EffectiveSpacing,
    ElementPath,
    Finding,
    InstanceContext,
    PipelineResult,
    Severity,
)
from .policy import SpacingPolicy, SwapRule
from .report import (
    DSAttr,
    FunctionalGroup,
    PixelMeasures,
    SpacingReport,
    UltrasoundRegion,
    gather,
    raw_text,
)
from .validate import validate

__all__ = [
    "DSAttr",
    "DSKind",
    "Decision",
    "Edit",
    "EffectiveSpacing",
    "ElementPath",
    "Finding",
    "FunctionalGroup",
    "InstanceContext",
    "NormalizedDS",
    "PipelineResult",
    "PixelMeasures",
    "Severity",
    "SpacingPolicy",
    "SpacingReport",
    "SwapRule",
    "UltrasoundRegion",
    "calibration_label",
    "classify_ds",
    "decide",
    "effective_spacing",
    "format_ds",
    "gather",
    "matching_rules",
    "normalize_ds",
    "parse_ds",
    "raw_text",
    "reversal_evidence",
    "rule_matches",
    "run_pipeline",
    "split_ds",
    "validate",
]

#: Code of the finding recorded when a stage fails on a header nobody foresaw.
PIPELINE_ERROR = "PIPELINE_ERROR"


def run_pipeline(ds: Dataset, ctx: InstanceContext, policy: SpacingPolicy) -> PipelineResult:
    """Check one received instance's spacing and decide what to change.

    Runs :func:`gather` -> :func:`validate` -> :func:`decide` ->
    :func:`effective_spacing` (on the values after the decided edits).  Never
    raises: a header that breaks a stage yields a single ``PIPELINE_ERROR``
    warning and no edits, so the instance is stored as received.
    """
    try:
        report = gather(ds)
        rules = matching_rules(report, ctx, policy)
        findings = validate(report, policy, comma_decimal=any(r.comma_decimal for r in rules))
        decision = decide(report, ctx, policy, rules=rules)
        effective = effective_spacing(report.with_edits(decision.edits))
    except Exception as exc:  # a malformed header must never crash the storage node
        message = f"spacing pipeline failed: {type(exc).__name__}: {exc}; stored as received"
        return PipelineResult(findings=[Finding(PIPELINE_ERROR, Severity.WARNING, message)])
    return PipelineResult(
        findings=findings + list(decision.findings),
        edits=list(decision.edits),
        effective=effective,
        report=report,
    )
