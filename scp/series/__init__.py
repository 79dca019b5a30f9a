"""Per-series geometry: slice spacing (Z) of the stacks of a series (rulebook section G).

Pure code: no database, no network (only :mod:`scp.pipeline` and :mod:`scp.series` itself,
pydicom data sets read leniently, numpy). Import the public names from here; the modules, in
dependency order:

* :mod:`scp.series.codes` -- finding codes and attribute tags;
* :mod:`scp.series.counts` -- value -> count tables (histograms, consensus values);
* :mod:`scp.series.tolerance` -- :class:`Tolerance` (rule 25 and friends);
* :mod:`scp.series.slices` -- :class:`SliceGeometry`, :func:`slices_from_dataset` (the only
  DICOM reading: Image Plane Module, per-frame functional groups);
* :mod:`scp.series.vectors` -- IOP validity, slice normal, projection, quantized positions
  (rules 22, 23);
* :mod:`scp.series.stacks` -- stack identity (rule 21);
* :mod:`scp.series.gaps` -- :class:`GapStats`, incremental gap histograms (rules 24-27, 30);
* :mod:`scp.series.reports` -- result values and their JSON (:class:`StackSummary`,
  :class:`SeriesGeometry`, ...);
* :mod:`scp.series.evaluate` -- :func:`evaluate_stack`, :func:`summarize_stack` (rules 24-30);
* :mod:`scp.series.stack_state` -- :class:`StackState`, the incremental state of one stack;
* :mod:`scp.series.state` -- :class:`SeriesState` (persisted JSON), :func:`summarize_series`;
* :mod:`scp.series.summary` -- :func:`compose_series`, the SERIES representation.
"""

from __future__ import annotations

from scp.series.evaluate import evaluate_stack, summarize_stack
from scp.series.gaps import NEAR_DUPLICATE_UM, GapStats
from scp.series.reports import CountedFinding, SeriesGeometry, StackReport, StackSummary
from scp.series.slices import SliceGeometry, slices_from_dataset
from scp.series.stack_state import StackState
from scp.series.stacks import StackIdentity, match_stack, stack_key
from scp.series.state import Placement, SeriesState, summarize_series
from scp.series.summary import compose_series
from scp.series.tolerance import DEFAULT_TOLERANCE, Tolerance
from scp.series.vectors import (
    POSITION_QUANTUM_MM,
    iop_valid,
    position_um,
    project,
    slice_normal,
)

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
