"""Rulebook section E, enhanced multi-frame: rules 17-18.

Pixel Measures Sequence (0028,9110), PS3.3 C.7.6.16.2.1: exactly one item,
in the Shared (5200,9229) or in every Per-frame (5200,9230) Functional Groups
item (rule 17); per-frame Pixel Spacing values that differ (rule 18).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from ..compare import group_values
from ..labels import attribute_label, clip
from ..messages import finding, frames_text
from ..model import Finding, Severity
from ..report import SpacingReport

__all__ = ["multiframe_findings", "pixel_measures_problems"]

_PS = "PixelSpacing"


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


def multiframe_findings(report: SpacingReport) -> list[Finding]:
    findings: list[Finding] = []
    label = attribute_label("PixelMeasuresSequence")
    problems = pixel_measures_problems(report)
    if problems:
        findings.append(
            finding(
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
    numeric: dict[tuple[float, ...] | str, Sequence[float]] = {
        k: k for k in values if not isinstance(k, str)
    }
    groups = group_values(((k, len(f)) for k, f in values.items()), numeric)
    if len(groups) > 1:
        merged = [(keys[0], sorted(i for k in keys for i in values[k])) for keys, _ in groups]
        shown = "; ".join(f"{_show(key)} in {frames_text(frames)}" for key, frames in merged[:4])
        findings.append(
            finding(
                "PIXEL_MEASURES_VARY",
                Severity.WARNING,
                "18",
                _PS,
                f"{attribute_label(_PS)} in the per-frame {label} takes {len(groups)} "
                f"different values ({shown}); spacing is reported per frame (rule 18)",
            )
        )
    return findings


def _show(key: tuple[float, ...] | str) -> str:
    return clip(key) if isinstance(key, str) else "\\".join(f"{v:g}" for v in key)
