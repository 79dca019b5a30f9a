"""The node's decisions on one instance, shared by the receive path and ``check``.

Offline equals online: :class:`scp.services.ingest.Ingestor` and
:func:`scp.services.check.check_file` call the same three steps, so a file checked on disk
gets the verdict, findings, edits and series geometry the node gives it over the network:

1. :func:`run_decisions` -- the spacing pipeline on the header as received (a pipeline bug
   becomes a ``PIPELINE_ERROR`` warning, never a lost image);
2. :func:`rewrite` -- the edits applied to the header (Original Attributes Sequence record,
   PS3.3 C.12.1.1.9) and the header encoded in the file's transfer syntax; when that is
   impossible the edits are withdrawn and reported once (``NOT_REWRITTEN``; the findings
   that said "corrected" become warnings, "(not applied)");
3. :func:`edited_slices` -- the series geometry from the header *after* the edits (a swap
   or a coercion changes the Pixel Spacing the series sees).
"""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import UTC, datetime

from pydicom.dataset import Dataset

from scp.pipeline import run_pipeline
from scp.pipeline.annotate import annotate
from scp.pipeline.model import Edit, Finding, InstanceContext, PipelineResult, Severity
from scp.pipeline.policy import SpacingPolicy
from scp.pipeline.record import apply_edits
from scp.series import SliceGeometry, slices_from_dataset
from storage.header_codec import UnsupportedRewrite, encode_header
from storage.part10 import ReceivedFile

__all__ = ["edited_slices", "header_view", "rewrite", "run_decisions", "withdraw_edits"]

log = logging.getLogger("spacing_scp.decisions")


def header_view(received: ReceivedFile) -> Dataset:
    """A view of the received header: reading converts elements, and a converted element
    would be re-encoded from its value; the header itself is only touched by the edits."""
    return received.header[0x00000000:0xFFFFFFFF]


def run_decisions(view: Dataset, ctx: InstanceContext, policy: SpacingPolicy) -> PipelineResult:
    """The spacing pipeline on ``view``; a failure of the pipeline is a ``PIPELINE_ERROR``
    warning (the instance is still stored as received)."""
    try:
        return run_pipeline(view, ctx, policy)
    except Exception as exc:  # a pipeline bug must never lose an image
        log.exception("spacing pipeline failed")
        return PipelineResult(
            findings=[
                Finding(
                    "PIPELINE_ERROR",
                    Severity.WARNING,
                    f"spacing checks could not run: {type(exc).__name__}: {exc}"[:500],
                )
            ]
        )


def rewrite(
    received: ReceivedFile,
    result: PipelineResult,
    ae_title: str,
    *,
    private_annotation: bool = False,
    now: datetime | None = None,
) -> bytes | None:
    """Apply ``result.edits`` to ``received.header`` and encode it in the file's transfer
    syntax (:func:`storage.header_codec.encode_header`); ``None`` when nothing changes.

    ``private_annotation``: also add the private verdict block (``check --fix``). When the
    header cannot be rewritten, the edits are withdrawn from ``result`` and reported as one
    ``NOT_REWRITTEN`` warning (plus, for an edit without a finding of its own code, a
    warning saying what would have changed); ``None`` is returned.
    """
    if not result.edits and not private_annotation:
        return None
    try:
        if result.edits:
            apply_edits(received.header, result.edits, ae_title, now or datetime.now(UTC))
        if private_annotation:
            annotate(received.header, result)
        return encode_header(received.header, received.transfer_syntax_uid)
    except UnsupportedRewrite as exc:
        reason = f"edits not applied: {exc}"
    except Exception as exc:
        log.exception("rewrite failed; the instance is kept as received")
        reason = f"edits not applied: {exc}"[:500]
    withdraw_edits(result, reason)
    return None


def withdraw_edits(result: PipelineResult, reason: str) -> None:
    """Edits that are not in the stored file: removed from ``result``, the "corrected"
    findings become warnings "(not applied)", one ``NOT_REWRITTEN`` warning gives
    ``reason``, and each finding code appears once."""
    not_applied = list(result.edits)
    result.edits.clear()
    # Nothing was changed: findings that said "corrected" become warnings.
    result.findings[:] = [
        replace(f, severity=Severity.WARNING, message=f.message + " (not applied)")
        if f.severity == Severity.CORRECTED
        else f
        for f in result.findings
    ]
    result.findings.append(Finding("NOT_REWRITTEN", Severity.WARNING, reason))
    reported = {f.code for f in result.findings}
    for edit in not_applied:
        if edit.code not in reported:  # a finding appears once
            result.findings.append(_unapplied(edit))
            reported.add(edit.code)


def _unapplied(edit: Edit) -> Finding:
    return Finding(
        edit.code,
        Severity.WARNING,
        f"{edit.attribute} would be changed from {edit.old!r} to {edit.new!r} but the "
        "instance could not be rewritten; kept as received",
    )


def edited_slices(
    received: ReceivedFile, view: Dataset, result: PipelineResult
) -> list[SliceGeometry]:
    """The slices of the instance as stored: from the edited header when edits were
    applied, else from ``view``. Never fails (rulebook G is per series)."""
    try:
        return slices_from_dataset(header_view(received) if result.edits else view)
    except Exception:
        log.debug("no usable geometry", exc_info=True)
        return []
