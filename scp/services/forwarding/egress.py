"""Copies the node sends on: the stored instance, annotated with its verdict.

The stored file holds what the node vouches for (received bytes, plus the
spacing edits recorded in Original Attributes Sequence).  The private
``SPACING_SCP`` block (:mod:`scp.pipeline.annotate`) is added on the way out,
to forwarded copies (``send = "annotated"``) and to ``check --fix`` output,
by the same streaming rewrite: a new header, then the pixel data copied as
bytes.  When the header cannot be re-encoded (deflated data sets, implicit VR
under an explicit transfer syntax) the stored bytes go out unchanged.  When the
annotation itself fails (a bug, or an index row it cannot read), the forwarding worker
sends the stored instance as it is and records :data:`FORWARD_UNANNOTATED` on it
(:func:`unannotated_finding`): the instance reaches the PACS, the gap is visible.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import BinaryIO

from scp.pipeline.annotate import annotate
from scp.pipeline.model import Edit, EffectiveSpacing, Finding, PipelineResult, Severity
from storage.header_codec import UnsupportedRewrite, encode_header
from storage.index import FindingRow
from storage.models import Instance
from storage.part10 import read_received, write_part10

log = logging.getLogger("spacing_scp.egress")

#: The finding recorded on an instance forwarded without its private block because the
#: annotation failed.
FORWARD_UNANNOTATED = "FORWARD_UNANNOTATED"


def unannotated_finding(exc: BaseException) -> FindingRow:
    """The :data:`FORWARD_UNANNOTATED` finding (severity ``warning``) for ``exc``."""
    cause = f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
    return FindingRow(
        FORWARD_UNANNOTATED,
        Severity.WARNING.value,
        f"forwarded as stored, without the private SPACING_SCP block: the annotation failed "
        f"({cause})",
    )


def result_from_index(inst: Instance) -> PipelineResult:
    """The pipeline's verdict on an instance, rebuilt from its index row."""
    findings = []
    for f in inst.findings:
        try:
            severity = Severity(f.severity)
        except ValueError:
            severity = Severity.INFO
        findings.append(Finding(f.code, severity, f.message, f.rule, f.tag))
    source = inst.spacing_source
    effective = EffectiveSpacing(
        inst.pixel_spacing_row_mm,
        inst.pixel_spacing_column_mm,
        source if source else None,  # type: ignore[arg-type]
        inst.calibration,
    )
    edits = [
        Edit(
            a.code,
            "CORRECT" if a.reason == "CORRECT" else "COERCE",
            tuple(int(p) if p.isdigit() else p for p in a.path.split("/")),
            a.old,
            a.new,
        )
        for a in inst.actions
    ]
    return PipelineResult(findings=findings, edits=edits, effective=effective)


def write_annotated(src: Path, dst: BinaryIO, result: PipelineResult) -> bool:
    """Write ``src`` with the private verdict block to ``dst``; ``False`` if sent as stored."""
    received = read_received(src)
    try:
        annotate(received.header, result)
        header_bytes = encode_header(received.header, received.transfer_syntax_uid)
    except UnsupportedRewrite as exc:
        log.info("%s goes out unannotated: %s", src.name, exc)
        write_part10(dst, received.file_meta, received, None)
        return False
    write_part10(dst, received.file_meta, received, header_bytes)
    return True
