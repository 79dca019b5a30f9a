"""The per-instance spacing pipeline: gather -> validate -> decide -> effective.

Pure functions: no network, no database, no file writes.  The dataset is read
(never modified, never copied, pixel data never touched); the caller applies
the returned :class:`Edit` objects in order.
"""

from __future__ import annotations

from dataclasses import replace

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
from .groups import FunctionalGroup, PixelMeasures
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
from .raw import DSAttr, raw_text
from .regions import UltrasoundRegion
from .report import SpacingReport, gather
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
#: Info: the node's own earlier correction is present; swap rules are not applied again.
ALREADY_CORRECTED = "ALREADY_CORRECTED"


def corrected_by_node(ds: Dataset, node_ae_title: str) -> set[str]:
    """Keywords the node itself swapped (reason ``CORRECT``) in an earlier event.

    Read from Original Attributes Sequence (0400,0561) items whose Modifying System
    (0400,0563) is the node's AE title (PS3.3 C.12.1.1.9).
    """
    if not node_ae_title:
        return set()
    out: set[str] = set()
    try:
        items = ds.get("OriginalAttributesSequence") or []
        for item in items:
            system = str(item.get("ModifyingSystem", "") or "").strip()
            reason = str(item.get("ReasonForTheAttributeModification", "") or "").strip()
            if system != node_ae_title.strip() or reason != "CORRECT":
                continue
            for modified in item.get("ModifiedAttributesSequence") or []:
                for elem in modified:
                    if elem.keyword:
                        out.add(elem.keyword)
    except Exception:
        return set()
    nested = {"SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"}
    if out & nested:
        out.add("PixelSpacing")  # a swap inside Pixel Measures records the whole sequence
    return out & {"PixelSpacing", "ImagerPixelSpacing"}


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
        done = corrected_by_node(ds, ctx.node_ae_title)
        already: list[Finding] = []
        if done:
            # The instance carries the node's own earlier correction (a resend of a copy the
            # node forwarded, or a stored file being re-checked): never swap it back.
            rules = tuple(
                kept
                for kept in (
                    replace(r, attributes=tuple(a for a in r.attributes if a not in done))
                    for r in rules
                )
                if kept.attributes
            )
            policy = replace(policy, on_suspect_reversed="flag")
            already.append(
                Finding(
                    ALREADY_CORRECTED,
                    Severity.INFO,
                    f"{', '.join(sorted(done))} already corrected by {ctx.node_ae_title} "
                    "(Original Attributes Sequence (0400,0561), PS3.3 C.12.1.1.9); "
                    "not changed again",
                    "7",
                    "(0400,0561)",
                )
            )
        findings = validate(report, policy, comma_decimal=any(r.comma_decimal for r in rules))
        decision = decide(report, ctx, policy, rules=rules)
        effective = effective_spacing(report.with_edits(decision.edits))
    except Exception as exc:  # a malformed header must never crash the storage node
        message = f"spacing pipeline failed: {type(exc).__name__}: {exc}; stored as received"
        return PipelineResult(findings=[Finding(PIPELINE_ERROR, Severity.WARNING, message)])
    return PipelineResult(
        findings=findings + list(decision.findings) + already,
        edits=list(decision.edits),
        effective=effective,
        report=report,
    )
