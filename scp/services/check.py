"""``spacing-scp check``: the node's pipeline on files and folders, without a network.

Every file goes through the same steps as a received instance (structure check,
spacing pipeline, edits) and the series summaries are composed by the same code
as the index's (:func:`scp.series.summary.compose_series`), so a folder on disk
and a series received over the network get the same answer.  ``--fix OUTDIR``
writes corrected copies (edits recorded in Original Attributes Sequence, plus
the private verdict block when ``[policy] annotate_private``).
"""

from __future__ import annotations

import sys
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from pydicom.dataset import Dataset

from scp.pipeline.compare import decimals_of
from scp.pipeline.model import InstanceContext, PipelineResult, Severity
from scp.pipeline.policy import SpacingPolicy
from scp.pipeline.raw import raw_text
from scp.series import (
    DEFAULT_TOLERANCE,
    SeriesState,
    SliceGeometry,
    Tolerance,
    compose_series,
)
from scp.services.decisions import edited_slices, header_view, rewrite, run_decisions
from scp.services.header_fields import series_fields
from scp.services.series_query import spacing_consensus
from storage.part10 import MalformedDataset, read_received, write_part10
from storage.queries import SpacingGroup

UNREADABLE = "FILE_UNREADABLE"


@dataclass
class Checked:
    path: Path
    sop_instance_uid: str | None = None
    series_instance_uid: str | None = None
    study_instance_uid: str | None = None
    #: General Series / Equipment attributes (:func:`scp.services.header_fields.series_fields`).
    series: dict[str, str | None] = field(default_factory=dict)
    result: PipelineResult | None = None
    received_pixel_spacing: str | None = None
    error: str | None = None
    slices: list[SliceGeometry] = field(default_factory=list)
    fixed: Path | None = None

    @property
    def verdict(self) -> str:
        if self.error is not None:
            return Severity.INVALID.value
        assert self.result is not None
        return self.result.verdict

    def to_dict(self) -> dict[str, Any]:
        """The file's entry in ``check --json`` (:class:`scp.models.CheckedInstance`)."""
        out: dict[str, Any] = {
            "path": str(self.path),
            "sop_instance_uid": self.sop_instance_uid,
            "series_instance_uid": self.series_instance_uid,
            "verdict": self.verdict,
            "received_pixel_spacing": self.received_pixel_spacing,
            "fixed_copy": None if self.fixed is None else str(self.fixed),
        }
        if self.error is not None:
            out["findings"] = [
                {
                    "code": UNREADABLE,
                    "severity": "invalid",
                    "message": self.error,
                    "rule": None,
                    "tag": None,
                }
            ]
            out["pixel_spacing"] = {
                "row_mm": None,
                "column_mm": None,
                "source": None,
                "calibration": None,
            }
            out["actions"] = []
            return out
        assert self.result is not None
        eff = self.result.effective
        out["pixel_spacing"] = {
            "row_mm": eff.row_mm,
            "column_mm": eff.column_mm,
            "source": eff.source,
            "calibration": eff.calibration,
        }
        out["findings"] = [
            {
                "code": f.code,
                "severity": f.severity.value,
                "message": f.message,
                "rule": f.rule,
                "tag": f.tag,
            }
            for f in self.result.findings
        ]
        out["actions"] = [
            {
                "code": e.code,
                "attribute": e.attribute,
                "path": "/".join(map(str, e.path)),
                "old": e.old,
                "new": e.new,
                "reason": e.reason,
            }
            for e in self.result.edits
        ]
        return out


def iter_files(paths: Iterable[Path]) -> Iterator[tuple[Path, Path]]:
    """(file, root it was found under), folders walked recursively, sorted."""
    for path in paths:
        if path.is_dir():
            for f in sorted(path.rglob("*")):
                if f.is_file() and not f.name.startswith("."):
                    yield f, path
        elif path.is_file():
            yield path, path.parent
        else:
            raise FileNotFoundError(f"{path}: no such file or folder")


def is_part10(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def _text(ds: Dataset, keyword: str) -> str | None:
    value = raw_text(ds, keyword)
    return value.strip() if value else None


def check_file(
    path: Path,
    policy: SpacingPolicy,
    node_ae_title: str,
    fix_to: Path | None = None,
) -> Checked:
    try:
        received = read_received(path)
    except (MalformedDataset, OSError) as exc:
        return Checked(path, error=str(exc))
    view = header_view(received)
    result = run_decisions(view, InstanceContext(node_ae_title=node_ae_title), policy)
    item = Checked(
        path,
        sop_instance_uid=_text(view, "SOPInstanceUID"),
        series_instance_uid=_text(view, "SeriesInstanceUID"),
        study_instance_uid=_text(view, "StudyInstanceUID"),
        series=series_fields(view),
        result=result,
        received_pixel_spacing=raw_text(view, "PixelSpacing"),
    )
    # The node's own rewrite, with or without --fix: an edit that cannot be written is
    # withdrawn and reported exactly as over the network (offline equals online).
    annotated = fix_to is not None and policy.annotate_private
    header_bytes = rewrite(received, result, node_ae_title, private_annotation=annotated)
    if fix_to is not None:
        fix_to.parent.mkdir(parents=True, exist_ok=True)
        with open(fix_to, "wb") as fh:
            write_part10(fh, received.file_meta, received, header_bytes)
        item.fixed = fix_to
    item.slices = edited_slices(received, view, result)
    return item


def _series_attributes(members: list[Checked]) -> dict[str, str | None]:
    """Per attribute, the last value present in file order: what the index keeps after
    receiving the files in that order (each instance replaces the values it has)."""
    out: dict[str, str | None] = {}
    for m in members:
        for key, value in m.series.items():
            if value is not None or key not in out:
                out[key] = value
    return out


def _spacing_group(member: Checked) -> SpacingGroup:
    """One instance's effective spacing as the index groups it (value, decimals, source)."""
    assert member.result is not None
    eff = member.result.effective
    row_d = None if eff.row_mm is None else decimals_of(eff.row_mm)
    col_d = None if eff.column_mm is None else decimals_of(eff.column_mm)
    return (eff.row_mm, eff.column_mm, row_d, col_d, eff.source, 1)


def series_summaries(
    items: list[Checked], tolerance: Tolerance = DEFAULT_TOLERANCE
) -> list[dict[str, Any]]:
    groups: dict[str, list[Checked]] = defaultdict(list)
    for item in items:
        if item.series_instance_uid and item.result is not None:
            groups[item.series_instance_uid].append(item)
    out = []
    for uid, members in sorted(groups.items()):
        slices = [g for m in members for g in m.slices]
        geometry = (
            SeriesState.from_slices(slices).summary(False, tolerance).to_dict() if slices else None
        )
        agg: dict[tuple[str, str], list[str]] = defaultdict(list)
        for m in members:
            assert m.result is not None
            for f in m.result.findings:
                agg[(f.code, f.severity.value)].append(f.message)
        instance_findings = [
            {"code": code, "severity": sev, "count": len(msgs), "message": min(msgs)}
            for (code, sev), msgs in sorted(agg.items())
        ]
        best, consistent = spacing_consensus([_spacing_group(m) for m in members])
        out.append(
            compose_series(
                fields={
                    "series_instance_uid": uid,
                    "study_instance_uid": members[0].study_instance_uid,
                    **_series_attributes(members),
                    "instance_count": len(members),
                    "corrected_instances": sum(
                        1 for m in members if m.result is not None and m.result.edits
                    ),
                    "deleted_instances": 0,
                    "last_received_at": None,
                },
                state="settled",
                geometry=geometry,
                instance_findings=instance_findings,
                spacing=best,
                spacing_consistent=consistent,
            )
        )
    return out


class Progress:
    """A one-line progress bar on a terminal (nothing when not a terminal)."""

    def __init__(self, total: int, stream: TextIO = sys.stderr, minimum: int = 20) -> None:
        self.total = total
        self.stream = stream
        self.enabled = total >= minimum and stream.isatty()
        self.done = 0

    def step(self) -> None:
        self.done += 1
        if self.enabled and (self.done == self.total or self.done % 10 == 0):
            width = 30
            filled = width * self.done // max(self.total, 1)
            self.stream.write(
                f"\r[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total}"
            )
            if self.done == self.total:
                self.stream.write("\n")
            self.stream.flush()


def run_check(
    paths: list[Path],
    policy: SpacingPolicy,
    node_ae_title: str,
    tolerance: Tolerance = DEFAULT_TOLERANCE,
    fix_dir: Path | None = None,
) -> tuple[list[Checked], list[dict[str, Any]], int]:
    """Check every DICOM file under ``paths``; return items, series, skipped count."""
    files = list(iter_files(paths))
    progress = Progress(len(files))
    items: list[Checked] = []
    skipped = 0
    for path, root in files:
        progress.step()
        if not is_part10(path):
            skipped += 1
            continue
        target = None
        if fix_dir is not None:
            rel = path.relative_to(root) if path != root else Path(path.name)
            target = fix_dir / rel
            if target.resolve() == path.resolve():
                raise ValueError("--fix must name a folder other than the input")
        items.append(check_file(path, policy, node_ae_title, target))
    return items, series_summaries(items, tolerance), skipped
