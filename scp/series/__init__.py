"""Per-series geometry: slice spacing (Z) of the stacks of a series (rulebook section G).

Everything here is pure (no database, no network); see :mod:`scp.series.geometry`.
"""

from __future__ import annotations

from scp.series.geometry import (
    DEFAULT_TOLERANCE,
    NEAR_DUPLICATE_UM,
    POSITION_QUANTUM_MM,
    CountedFinding,
    GapStats,
    Placement,
    SeriesGeometry,
    SeriesState,
    SliceGeometry,
    StackIdentity,
    StackReport,
    StackState,
    StackSummary,
    Tolerance,
    evaluate_stack,
    iop_valid,
    match_stack,
    position_um,
    project,
    slice_normal,
    slices_from_dataset,
    stack_key,
    summarize_series,
    summarize_stack,
)
from scp.series.summary import compose_series

__all__ = [
    "DEFAULT_TOLERANCE",
    "NEAR_DUPLICATE_UM",
    "POSITION_QUANTUM_MM",
    "CountedFinding",
    "GapStats",
    "Placement",
    "SeriesGeometry",
    "SeriesState",
    "SliceGeometry",
    "StackIdentity",
    "StackReport",
    "StackState",
    "StackSummary",
    "Tolerance",
    "compose_series",
    "evaluate_stack",
    "iop_valid",
    "match_stack",
    "position_um",
    "project",
    "slice_normal",
    "slices_from_dataset",
    "stack_key",
    "summarize_series",
    "summarize_stack",
]
