"""Message helpers shared by the checks and :mod:`scp.pipeline.decide`.

:func:`describe_path` says where an element sits inside the functional groups
(PS3.3 C.7.6.16: Shared (5200,9229) / Per-frame (5200,9230) Functional Groups
Sequence > Pixel Measures (0028,9110) / Plane Position (0020,9113) / Plane
Orientation (0020,9116) Sequence); :func:`grouped` folds identical per-frame
values so a value repeated in 3000 frames yields one finding; :func:`finding`
builds a :class:`~scp.pipeline.model.Finding` citing the attribute's tag.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from .labels import tag_text
from .model import ElementPath, Finding, Severity
from .raw import DSAttr

__all__ = ["describe_path", "finding", "frames_text", "grouped", "where_text"]

_SEQUENCE_LABELS = {
    "SharedFunctionalGroupsSequence": "Shared Functional Groups Sequence (5200,9229)",
    "PerFrameFunctionalGroupsSequence": "Per-frame Functional Groups Sequence (5200,9230)",
    "PixelMeasuresSequence": "Pixel Measures Sequence (0028,9110)",
    "PlanePositionSequence": "Plane Position Sequence (0020,9113)",
    "PlaneOrientationSequence": "Plane Orientation Sequence (0020,9116)",
}


def frames_text(frames: Sequence[int]) -> str:
    """``item 3`` or ``items 1, 2, 3, 4, 5 and 7 more`` (per-frame item indexes)."""
    shown = ", ".join(str(f) for f in frames[:5])
    more = f" and {len(frames) - 5} more" if len(frames) > 5 else ""
    return f"items {shown}{more}" if len(frames) > 1 else f"item {frames[0]}"


def describe_path(path: ElementPath, frames: Sequence[int] | None = None) -> str:
    """Where an element sits, for messages: ``""`` at top level, else
    ``" in Per-frame Functional Groups Sequence (5200,9230) item 3 > ..."``.

    ``frames`` replaces the per-frame item index by a list of frames sharing
    the same value.
    """
    if len(path) <= 1:
        return ""
    parts: list[str] = []
    per_frame = path[0] == "PerFrameFunctionalGroupsSequence"
    for position, component in enumerate(path[:-1]):
        if isinstance(component, int):
            if position == 1 and per_frame:
                parts[-1] += f" {frames_text(frames or [component])}"
            elif component != 0:  # single-item sequences: item 0 goes without saying
                parts[-1] += f" item {component}"
        else:
            parts.append(_SEQUENCE_LABELS.get(component, component))
    return " in " + " > ".join(parts)


def finding(code: str, severity: Severity, rule: str, keyword: str | None, message: str) -> Finding:
    tag = tag_text(keyword) if keyword else None
    return Finding(code=code, severity=severity, message=message, rule=rule, tag=tag)


def grouped(attrs: Iterable[DSAttr]) -> list[tuple[DSAttr, list[int]]]:
    """Group per-frame occurrences by (location within the frame, raw text).

    Returns one representative per group and the per-frame item indexes, so
    a value repeated in 3000 frames yields one finding, not 3000.
    """
    groups: dict[tuple[object, ...], tuple[DSAttr, list[int]]] = {}
    for attr in attrs:
        per_frame = len(attr.path) > 2 and isinstance(attr.path[1], int)
        key = (attr.path[0], *attr.path[2:], attr.raw) if per_frame else (*attr.path, attr.raw)
        entry = groups.get(key)
        if entry is None:
            entry = groups[key] = (attr, [])
        if per_frame and attr.path[0] == "PerFrameFunctionalGroupsSequence":
            entry[1].append(int(attr.path[1]))
    return list(groups.values())


def where_text(attr: DSAttr, frames: Sequence[int]) -> str:
    """:func:`describe_path` of ``attr``, naming ``frames`` when given."""
    return describe_path(attr.path, frames or None)
