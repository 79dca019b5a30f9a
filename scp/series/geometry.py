"""Per-series slice spacing (Z): rulebook section G, rules 21-30.

Pure code: no database, no network. The only DICOM reading is :func:`slices_from_dataset`,
which turns a header into :class:`SliceGeometry` values.

Where the numbers come from
---------------------------
The Image Plane Module (PS3.3 C.7.6.2) gives, per image, Image Position (Patient)
(0020,0032) -- the x, y, z of the centre of the first transmitted pixel, in mm -- and Image
Orientation (Patient) (0020,0037) -- the direction cosines of the first row and of the first
column (PS3.3 C.7.6.2.1.1). The slice normal is ``n = row x column`` and a slice's place in
its stack is the projection ``IPP . n`` (rule 23; never Instance Number or Slice Location).
Z spacing is the difference of consecutive projections (rule 24). Spacing Between Slices
(0018,0088) is only a cross-check (rule 24) and Slice Thickness (0018,0050) is never a
spacing (rule 29). Enhanced multi-frame images carry the same attributes per frame in the
Plane Position (0020,9113), Plane Orientation (0020,9116) and Pixel Measures (0028,9110)
functional group macros (PS3.3 C.7.6.16.2.1, C.7.6.16.2.3, C.7.6.16.2.4); each frame is
then a slice (rule 19).

Stacks (rule 21)
----------------
A stack is a set of slices with the same Frame of Reference UID (0020,0052), Rows (0028,0010),
Columns (0028,0011) and IOP within 1e-4 per component. :func:`stack_key` quantizes IOP to a
1e-4 grid, which can put two IOPs that differ by less than 1e-4 into different keys when they
straddle a grid boundary; :func:`match_stack` compares against the reference IOP of the
existing stacks with the tolerance and is what :class:`SeriesState` uses. The reference IOP of
a stack is the one of the slice that created it, and every slice of the stack is projected on
the reference normal, so projections are comparable. Matching is to the reference, not
transitive: with IOPs drifting by more than the tolerance in small steps, the grouping depends
on arrival order.

Positions and gaps (incremental indexing)
-----------------------------------------
Projections are quantized to integer micrometres (:func:`position_um`,
:data:`POSITION_QUANTUM_MM`). Two slices are at the same position when their quantized
positions are equal; gaps are differences of quantized positions, so they are exact integers
and every derived number is reproducible bit for bit whatever the arrival order. The cost: each
gap carries up to 1 um of rounding, so Z is known to about 1 um, far below any tolerance used
here; positions less than 1.5 um apart that straddle a rounding boundary give a 1 um gap, which
is treated as a (near-)duplicate (:data:`NEAR_DUPLICATE_UM`).

:class:`GapStats` holds, for one stack, histograms of the gaps between consecutive distinct
positions, of pairs of adjacent gaps (to tell runs of gaps, rule 30, from isolated missing
slices, rule 26), and of the number of slices at each position (duplicates and 4D repeats,
rule 27). Inserting a slice is O(1) given its neighbours; summaries cost O(distinct gaps +
distinct adjacent-gap pairs), which for real acquisitions is a handful. The database layer
stores the quantized position of every slice (indexed per stack) and, for each new slice:

1. ``placement = series_state.locate(slice)`` -- the stack key and quantized position;
2. queries the two nearest *distinct* positions below and above it in that stack, and the
   number of slices already at that exact position;
3. ``series_state.add(slice, below=..., above=..., at_position=...)`` and saves
   ``series_state.to_dict()`` (JSON) in the same transaction.

Steps 1-3 must be serialized per series (row lock or optimistic version check): stale
neighbours corrupt the histograms. :class:`GapStats` refuses updates that would make a count
negative or that contradict its known lowest/highest positions, which catches most races.

Tolerances (rule 25)
--------------------
Uniform means every gap within ``max(rel x median, abs_mm)`` of the median gap, with
``rel = 0.01`` and ``abs_mm = 0.01`` by default. Published tools use anything from 1e-6 to 20%,
so :class:`Tolerance` makes them configurable; the same tolerance is used for missing slices
(rule 26), runs of different gaps (rule 30) and the Spacing Between Slices and Slice Thickness
cross-checks (rules 24, 29).

Decisions where the rulebook is silent
--------------------------------------
* Median of an even number of gaps: the mean of the two middle gaps.
* Missing slices vs variable spacing: a gap that is k x median (k >= 2) is a missing-slice gap
  (rule 26) unless gaps of its cluster (gaps within the tolerance of each other) also occur
  next to each other somewhere in the stack: then it is a run of a different spacing (rule 30)
  and the whole cluster counts as variable spacing. Two adjacent double gaps are thus read as
  variable spacing, not as two missing slices. An isolated gap that is no multiple of the
  median is reported as non-uniform spacing (``SLICE_SPACING_NONUNIFORM``).
* ``uniform`` is literal rule 25: a missing slice makes a stack non-uniform, but it is reported
  as ``SLICE_MISSING``, not as ``SLICE_SPACING_NONUNIFORM``.
* Duplicates (rule 27) are warned about even when they are a clean 4D repeat (the message says
  so and gives the repeat count); one position holding several slices has no Z.
* While the series is receiving, every Z number is marked provisional, and the missing-slice
  and duplicate messages say so (a 4D series is not clean until its last phase arrives).
* The tilt check (rule 28) uses the first slice to reach the lowest and highest positions.
* A slice whose IOP fails rule 22 (or whose IPP is not finite) is counted in its stack but not
  positioned; its stack then has no Z (invalid geometry cannot be used for measurement).
* Spacing Between Slices and Slice Thickness of a stack are the most common values among its
  slices; for NM a negative SBS is compared by magnitude.
* Pixel Spacing consistency counts slices (frames of an enhanced instance count one by one,
  rule 18), values rounded to 1e-6 mm; an absent Pixel Spacing is a value of its own.
* Removing or replacing a slice: :meth:`GapStats.remove` exists, but :class:`StackState` does
  not track what a removal does to the tilt extremes or to the value counts; rebuild the series
  with :meth:`SeriesState.from_slices` then. The caller must not add the same SOP Instance
  (and frame) twice: a re-sent instance would count as a duplicate position.
"""

from __future__ import annotations

import itertools
import json
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import numpy as np

from scp.pipeline.model import Finding, Severity

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

Vec3 = tuple[float, float, float]
_K = TypeVar("_K")

#: Positions along the slice normal are quantized to this step (1 um).
POSITION_QUANTUM_MM = 1e-3
_UM_PER_MM = 1000.0
#: Gaps of at most this many quantization steps are (near-)duplicate positions (rule 27).
NEAR_DUPLICATE_UM = 1
#: Larger coordinates (10 km) are not patient coordinates: the geometry is invalid.
_MAX_COORDINATE_MM = 1e7

GAPSTATS_VERSION = 1
SERIES_STATE_VERSION = 1

TAG_IPP = "(0020,0032)"
TAG_IOP = "(0020,0037)"
TAG_SBS = "(0018,0088)"
TAG_ST = "(0018,0050)"
TAG_PS = "(0028,0030)"
TAG_FOR = "(0020,0052)"

# Finding codes of this module.
GEOMETRY_INVALID = "GEOMETRY_INVALID"
SLICE_DUPLICATE_POSITION = "SLICE_DUPLICATE_POSITION"
SLICE_MISSING = "SLICE_MISSING"
SLICE_SPACING_NONUNIFORM = "SLICE_SPACING_NONUNIFORM"
SLICE_TILT = "SLICE_TILT"
SPACING_BETWEEN_SLICES_NEGATIVE = "SPACING_BETWEEN_SLICES_NEGATIVE"
SPACING_BETWEEN_SLICES_MISMATCH = "SPACING_BETWEEN_SLICES_MISMATCH"
SLICE_THICKNESS_DIFFERS = "SLICE_THICKNESS_DIFFERS"
SERIES_GEOMETRY_MIXED = "SERIES_GEOMETRY_MIXED"
SERIES_PIXEL_SPACING_INCONSISTENT = "SERIES_PIXEL_SPACING_INCONSISTENT"


# --------------------------------------------------------------------------------------------
# Tolerances
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tolerance:
    """Configurable tolerances of rulebook section G.

    ``rel`` and ``abs_mm``: rule 25 (uniform spacing), also used by rules 24, 26, 29 and 30.
    ``iop``: rule 21 (same stack) and rule 22 (unit length, orthogonality).
    ``tilt``: rule 28, stacking direction parallel to the normal when ``|dot| >= 1 - tilt``.
    """

    rel: float = 0.01
    abs_mm: float = 0.01
    iop: float = 1e-4
    tilt: float = 1e-3

    def gap_mm(self, median_mm: float) -> float:
        """Rule 25 tolerance around a median gap: ``max(rel x median, abs_mm)``."""
        return max(self.rel * abs(median_mm), self.abs_mm)


DEFAULT_TOLERANCE = Tolerance()


# --------------------------------------------------------------------------------------------
# Slices
# --------------------------------------------------------------------------------------------


def _opt_float(value: float | None) -> float | None:
    return None if value is None else float(value)


@dataclass(frozen=True)
class SliceGeometry:
    """Geometry of one slice: a single-frame instance, or one frame of a multi-frame instance.

    ``iop``: Image Orientation (Patient) (0020,0037), 6 direction cosines (row then column).
    ``ipp``: Image Position (Patient) (0020,0032), mm. ``pixel_spacing``: Pixel Spacing
    (0028,0030) as (row spacing, column spacing) in mm (rule 6), or ``None``.
    ``slice_thickness``: (0018,0050); ``spacing_between_slices``: (0018,0088).
    ``frame_number``: 1-based frame of a multi-frame instance, ``None`` for single-frame.
    Sequences are stored as tuples of floats.
    """

    frame_of_reference_uid: str
    rows: int
    columns: int
    iop: tuple[float, ...]
    ipp: tuple[float, ...]
    pixel_spacing: tuple[float, float] | None = None
    slice_thickness: float | None = None
    spacing_between_slices: float | None = None
    modality: str = ""
    sop_instance_uid: str = ""
    frame_number: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "iop", tuple(float(v) for v in self.iop))
        object.__setattr__(self, "ipp", tuple(float(v) for v in self.ipp))
        object.__setattr__(self, "rows", int(self.rows))
        object.__setattr__(self, "columns", int(self.columns))
        if self.pixel_spacing is not None:
            row, col = self.pixel_spacing
            object.__setattr__(self, "pixel_spacing", (float(row), float(col)))
        object.__setattr__(self, "slice_thickness", _opt_float(self.slice_thickness))
        object.__setattr__(self, "spacing_between_slices", _opt_float(self.spacing_between_slices))

    @property
    def sort_key(self) -> tuple[str, int, tuple[float, ...], tuple[float, ...]]:
        """A deterministic order, used to make batch results independent of input order."""
        return (self.sop_instance_uid, self.frame_number or 0, self.ipp, self.iop)


def _floats(value: Any, count: int) -> tuple[float, ...] | None:
    """``count`` finite floats from a DS/FD value (single or multi-valued), else ``None``."""
    if value is None:
        return None
    items = [value] if isinstance(value, str | int | float) else list(value)
    if len(items) != count:
        return None
    try:
        out = tuple(float(v) for v in items)
    except (TypeError, ValueError):
        return None
    return out if all(math.isfinite(v) for v in out) else None


def _float(value: Any) -> float | None:
    got = _floats(value, 1)
    return None if got is None else got[0]


def _item(ds: Any, sequence: str) -> Any:
    """First item of ``sequence`` in ``ds``, or ``None``."""
    seq = ds.get(sequence) if ds is not None else None
    return seq[0] if seq else None


def slices_from_dataset(ds: Any) -> list[SliceGeometry]:
    """The slices of one instance header (a :class:`pydicom.Dataset`).

    Single-frame: one slice from the top-level Image Plane Module (PS3.3 C.7.6.2).
    Enhanced multi-frame (Per-frame Functional Groups Sequence (5200,9230) present): one slice
    per frame, IPP from Plane Position Sequence (0020,9113) of the frame, IOP from Plane
    Orientation Sequence (0020,9116), Pixel Spacing, Slice Thickness and Spacing Between
    Slices from Pixel Measures Sequence (0028,9110), per frame or shared (rules 17-19).
    Frames or instances without a parseable IPP and IOP are left out (empty list): they are
    not part of any stack. Values are read leniently (float of each value); checking the
    Decimal String syntax (rulebook section A) is the pipeline's job, not this module's.
    """
    for_uid = str(ds.get("FrameOfReferenceUID", "") or "")
    rows = int(ds.get("Rows", 0) or 0)
    columns = int(ds.get("Columns", 0) or 0)
    modality = str(ds.get("Modality", "") or "")
    sop = str(ds.get("SOPInstanceUID", "") or "")
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if not per_frame:
        iop = _floats(ds.get("ImageOrientationPatient"), 6)
        ipp = _floats(ds.get("ImagePositionPatient"), 3)
        if iop is None or ipp is None:
            return []
        ps = _floats(ds.get("PixelSpacing"), 2)
        return [
            SliceGeometry(
                frame_of_reference_uid=for_uid,
                rows=rows,
                columns=columns,
                iop=iop,
                ipp=ipp,
                pixel_spacing=(ps[0], ps[1]) if ps else None,
                slice_thickness=_float(ds.get("SliceThickness")),
                spacing_between_slices=_float(ds.get("SpacingBetweenSlices")),
                modality=modality,
                sop_instance_uid=sop,
            )
        ]
    shared = _item(ds, "SharedFunctionalGroupsSequence")

    def group(frame: Any, sequence: str) -> Any:
        found = _item(frame, sequence)
        return found if found is not None else _item(shared, sequence)

    slices: list[SliceGeometry] = []
    for index, frame in enumerate(per_frame, start=1):
        position = group(frame, "PlanePositionSequence")
        orientation = group(frame, "PlaneOrientationSequence")
        measures = group(frame, "PixelMeasuresSequence")
        if position is None or orientation is None:
            continue
        iop = _floats(orientation.get("ImageOrientationPatient"), 6)
        ipp = _floats(position.get("ImagePositionPatient"), 3)
        if iop is None or ipp is None:
            continue
        ps = _floats(measures.get("PixelSpacing"), 2) if measures is not None else None
        st = _float(measures.get("SliceThickness")) if measures is not None else None
        sbs = _float(measures.get("SpacingBetweenSlices")) if measures is not None else None
        slices.append(
            SliceGeometry(
                frame_of_reference_uid=for_uid,
                rows=rows,
                columns=columns,
                iop=iop,
                ipp=ipp,
                pixel_spacing=(ps[0], ps[1]) if ps else None,
                slice_thickness=st,
                spacing_between_slices=sbs,
                modality=modality,
                sop_instance_uid=sop,
                frame_number=index,
            )
        )
    return slices


# --------------------------------------------------------------------------------------------
# Vectors (rules 22, 23)
# --------------------------------------------------------------------------------------------


def _dot(a: Sequence[float], b: Sequence[float]) -> float:
    return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]


def _cross(a: Sequence[float], b: Sequence[float]) -> Vec3:
    return (
        a[1] * b[2] - a[2] * b[1],
        a[2] * b[0] - a[0] * b[2],
        a[0] * b[1] - a[1] * b[0],
    )


def _norm(a: Sequence[float]) -> float:
    return math.sqrt(_dot(a, a))


def iop_valid(iop: Sequence[float], tolerance: float = 1e-4) -> Finding | None:
    """Rule 22: check Image Orientation (Patient) (0020,0037) (PS3.3 C.7.6.2.1.1).

    Each direction cosine vector must have ``|length - 1| <= tolerance`` and the two must be
    orthogonal within ``|dot| <= tolerance``. Returns ``None`` when valid, else a
    ``GEOMETRY_INVALID`` finding of severity invalid.
    """
    values = tuple(iop)
    problem: str | None = None
    if len(values) != 6:
        problem = f"has {len(values)} values, not 6"
    elif not all(math.isfinite(v) for v in values):
        problem = "has a value that is not finite"
    else:
        row, col = values[:3], values[3:]
        len_row, len_col, dot = _norm(row), _norm(col), _dot(row, col)
        if abs(len_row - 1.0) > tolerance or abs(len_col - 1.0) > tolerance:
            problem = (
                f"direction cosines are not unit vectors (row length {len_row:.6g}, "
                f"column length {len_col:.6g}, tolerance {tolerance:g})"
            )
        elif abs(dot) > tolerance:
            problem = f"row and column are not orthogonal (dot {dot:.6g}, tolerance {tolerance:g})"
    if problem is None:
        return None
    return Finding(
        code=GEOMETRY_INVALID,
        severity=Severity.INVALID,
        message=f"Image Orientation (Patient) {TAG_IOP} {problem} (rule 22)",
        rule="22",
        tag=TAG_IOP,
    )


def _ipp_problem(ipp: Sequence[float]) -> str | None:
    values = tuple(ipp)
    if len(values) != 3:
        return f"Image Position (Patient) {TAG_IPP} has {len(values)} values, not 3"
    if not all(math.isfinite(v) and abs(v) <= _MAX_COORDINATE_MM for v in values):
        return f"Image Position (Patient) {TAG_IPP} has a value that is not a finite coordinate"
    return None


def slice_normal(iop: Sequence[float]) -> Vec3:
    """Rule 23: the unit slice normal ``n = row x column`` of IOP (0020,0037).

    The cross product is normalized so that projections are in mm even for IOPs that are
    unit length only within the rule 22 tolerance. Raises :class:`ValueError` when the row
    and column are (nearly) parallel or zero.
    """
    values = tuple(float(v) for v in iop)
    if len(values) != 6:
        raise ValueError(f"IOP needs 6 values, got {len(values)}")
    n = _cross(values[:3], values[3:])
    length = _norm(n)
    if not math.isfinite(length) or length < 1e-6:
        raise ValueError(f"IOP {values} has no slice normal")
    return (n[0] / length, n[1] / length, n[2] / length)


def project(ipp: Sequence[float], normal: Sequence[float]) -> float:
    """Rule 23: position of a slice along the stack, ``IPP (0020,0032) . n`` in mm."""
    return _dot(ipp, normal)


def position_um(projection_mm: float) -> int:
    """A projection quantized to integer micrometres (:data:`POSITION_QUANTUM_MM`).

    Rounds half to even; the database layer stores this value, indexed per stack, to find the
    neighbours of a new slice.
    """
    if not math.isfinite(projection_mm):
        raise ValueError(f"projection {projection_mm!r} is not finite")
    return round(projection_mm * _UM_PER_MM)


# --------------------------------------------------------------------------------------------
# Stack identity (rule 21)
# --------------------------------------------------------------------------------------------


def _iop_grid(iop: Sequence[float]) -> str:
    return ",".join(str(round(v * 1e4)) for v in iop)


def stack_key(g: SliceGeometry) -> str:
    """Rule 21 identity of the stack of a slice, as a string.

    ``"<Frame of Reference UID>|<Rows>x<Columns>|<IOP x 1e4, rounded>"``. IOPs within 1e-4 of
    each other may straddle a rounding boundary and get different keys: use
    :func:`match_stack` to find an existing stack by tolerance; two stacks that do not match
    each other never share a key.
    """
    return f"{g.frame_of_reference_uid}|{g.rows}x{g.columns}|{_iop_grid(g.iop)}"


@dataclass(frozen=True)
class StackIdentity:
    """What makes a stack (rule 21): Frame of Reference UID (0020,0052), Rows, Columns and
    the reference IOP (0020,0037) -- the one of the slice that created the stack."""

    key: str
    frame_of_reference_uid: str
    rows: int
    columns: int
    iop: tuple[float, ...]

    @classmethod
    def of(cls, g: SliceGeometry) -> StackIdentity:
        """The identity of a new stack created by ``g``."""
        return cls(stack_key(g), g.frame_of_reference_uid, g.rows, g.columns, tuple(g.iop))

    def matches(self, g: SliceGeometry, iop_tolerance: float = 1e-4) -> bool:
        """Rule 21: same Frame of Reference, Rows, Columns and IOP within the tolerance."""
        return (
            g.frame_of_reference_uid == self.frame_of_reference_uid
            and g.rows == self.rows
            and g.columns == self.columns
            and len(g.iop) == len(self.iop)
            and all(abs(a - b) <= iop_tolerance for a, b in zip(g.iop, self.iop, strict=True))
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "frame_of_reference_uid": self.frame_of_reference_uid,
            "rows": self.rows,
            "columns": self.columns,
            "iop": list(self.iop),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StackIdentity:
        return cls(
            key=str(data["key"]),
            frame_of_reference_uid=str(data["frame_of_reference_uid"]),
            rows=int(data["rows"]),
            columns=int(data["columns"]),
            iop=tuple(float(v) for v in data["iop"]),
        )


def match_stack(
    g: SliceGeometry, candidates: Iterable[StackIdentity], iop_tolerance: float = 1e-4
) -> str | None:
    """Key of the first candidate stack ``g`` belongs to (rule 21), or ``None``.

    Compares with the tolerance, so it has none of the rounding-boundary problem of
    :func:`stack_key`. Candidates are typically the few stacks already seen in the series.
    """
    for candidate in candidates:
        if candidate.matches(g, iop_tolerance):
            return candidate.key
    return None


# --------------------------------------------------------------------------------------------
# Gap statistics (incremental)
# --------------------------------------------------------------------------------------------


def _bump(counts: dict[Any, int], key: Any, delta: int) -> None:
    value = counts.get(key, 0) + delta
    if value < 0:
        raise ValueError(f"count of {key!r} would become negative: stale or wrong neighbours")
    if value:
        counts[key] = value
    else:
        counts.pop(key, None)


def _pad2(values: Sequence[int]) -> tuple[int | None, int | None]:
    if len(values) > 2:
        raise ValueError("give at most the two nearest distinct neighbours on each side")
    first = int(values[0]) if len(values) > 0 else None
    second = int(values[1]) if len(values) > 1 else None
    return first, second


@dataclass
class GapStats:
    """Mergeable, JSON-serializable gap histograms of one stack (rules 24-27, 30).

    JSON (:meth:`to_dict`; object keys are strings, values integers, positions in um)::

        {"version": 1, "quantum_mm": 0.001, "n": 60, "lo": -23750, "hi": 0,
         "lo_gap": 1250, "hi_gap": 1250, "multiplicity": {"3": 20},
         "gaps": {"1250": 19}, "pairs": {"1250,1250": 18}}

    Positions are integer micrometres (:func:`position_um`). ``n`` counts slices;
    ``multiplicity`` maps "slices at a position" to the number of positions with that count;
    ``gaps`` maps each gap between consecutive distinct positions (um) to its count; ``pairs``
    maps each pair of adjacent gaps (lower, upper) to its count; ``lo``/``hi`` are the lowest
    and highest positions and ``lo_gap``/``hi_gap`` the gaps next to them.

    Updates are O(1) given the neighbours (:meth:`insert`, :meth:`remove`); :meth:`merge`
    combines the statistics of two position ranges that do not overlap. Results equal those of
    :meth:`from_positions` on the same positions, whatever the order of the updates.
    """

    n: int = 0
    multiplicity: dict[int, int] = field(default_factory=dict)
    gaps: dict[int, int] = field(default_factory=dict)
    pairs: dict[tuple[int, int], int] = field(default_factory=dict)
    lo: int | None = None
    hi: int | None = None
    lo_gap: int | None = None
    hi_gap: int | None = None

    # -- construction ------------------------------------------------------------------------

    @classmethod
    def from_positions(cls, positions: Iterable[int]) -> GapStats:
        """Batch construction from quantized positions, in any order: O(n log n)."""
        arr = np.fromiter((int(p) for p in positions), dtype=np.int64)
        stats = cls()
        if arr.size == 0:
            return stats
        uniq, counts = np.unique(arr, return_counts=True)
        diffs = np.diff(uniq)
        gap_list: list[int] = [int(v) for v in diffs.tolist()]
        stats.n = int(arr.size)
        stats.multiplicity = dict(Counter(int(c) for c in counts.tolist()))
        stats.gaps = dict(Counter(gap_list))
        stats.pairs = dict(Counter(itertools.pairwise(gap_list)))
        stats.lo, stats.hi = int(uniq[0]), int(uniq[-1])
        if gap_list:
            stats.lo_gap, stats.hi_gap = gap_list[0], gap_list[-1]
        return stats

    @property
    def positions(self) -> int:
        """Number of distinct positions."""
        return sum(self.multiplicity.values())

    @property
    def duplicates(self) -> int:
        """Slices beyond the first at each position (exact duplicates, rule 27)."""
        return self.n - self.positions

    @property
    def near_duplicates(self) -> int:
        """Gaps of at most :data:`NEAR_DUPLICATE_UM` (positions closer than ~1.5 um)."""
        return sum(c for g, c in self.gaps.items() if g <= NEAR_DUPLICATE_UM)

    # -- updates -----------------------------------------------------------------------------

    @staticmethod
    def _splice(
        z: int, a: int | None, a2: int | None, b: int | None, b2: int | None
    ) -> tuple[dict[int, int], dict[tuple[int, int], int]]:
        """Histogram deltas of putting distinct position ``z`` between ``a`` and ``b``.

        ``a2`` is the distinct position below ``a``, ``b2`` the one above ``b``.
        """
        gap_delta: dict[int, int] = {}
        pair_delta: dict[tuple[int, int], int] = {}

        def add(counts: dict[_K, int], key: _K, delta: int) -> None:
            counts[key] = counts.get(key, 0) + delta

        gap_below = a - a2 if a is not None and a2 is not None else None
        gap_above = b2 - b if b is not None and b2 is not None else None
        if a is not None and b is not None:
            old = b - a
            add(gap_delta, old, -1)
            if gap_below is not None:
                add(pair_delta, (gap_below, old), -1)
            if gap_above is not None:
                add(pair_delta, (old, gap_above), -1)
        new_below = z - a if a is not None else None
        new_above = b - z if b is not None else None
        if new_below is not None:
            add(gap_delta, new_below, 1)
            if gap_below is not None:
                add(pair_delta, (gap_below, new_below), 1)
        if new_above is not None:
            add(gap_delta, new_above, 1)
            if gap_above is not None:
                add(pair_delta, (new_above, gap_above), 1)
        if new_below is not None and new_above is not None:
            add(pair_delta, (new_below, new_above), 1)
        return gap_delta, pair_delta

    def _apply(
        self, gap_delta: Mapping[int, int], pair_delta: Mapping[tuple[int, int], int], sign: int
    ) -> None:
        """Apply deltas atomically: nothing changes when a count would become negative."""
        bad = [str(k) for k, d in gap_delta.items() if self.gaps.get(k, 0) + sign * d < 0]
        bad += [str(k) for k, d in pair_delta.items() if self.pairs.get(k, 0) + sign * d < 0]
        if bad:
            raise ValueError(f"counts of {bad} would become negative: stale or wrong neighbours")
        for key, d in gap_delta.items():
            _bump(self.gaps, key, sign * d)
        for pair, d in pair_delta.items():
            _bump(self.pairs, pair, sign * d)

    def _check_neighbours(
        self, z: int, a: int | None, a2: int | None, b: int | None, b2: int | None
    ) -> None:
        ordered = [v for v in (a2, a, z, b, b2) if v is not None]
        if any(x >= y for x, y in itertools.pairwise(ordered)):
            raise ValueError(f"neighbours of {z} are not distinct and ordered: {ordered}")
        if (a2 is not None and a is None) or (b2 is not None and b is None):
            raise ValueError("a second neighbour was given without a first one")
        if self.lo is None or self.hi is None:
            if a is not None or b is not None:
                raise ValueError("neighbours given for an empty stack")
            return
        if a is None and b != self.lo:
            raise ValueError(f"no position below {z}, so {self.lo} must be the one above")
        if b is None and a != self.hi:
            raise ValueError(f"no position above {z}, so {self.hi} must be the one below")
        if a is not None and a2 is None and a != self.lo:
            raise ValueError(f"one position below {z} given, but the lowest is {self.lo}")
        if b is not None and b2 is None and b != self.hi:
            raise ValueError(f"one position above {z} given, but the highest is {self.hi}")

    def insert(
        self,
        z: int,
        below: Sequence[int] = (),
        above: Sequence[int] = (),
        *,
        at_position: int = 0,
    ) -> None:
        """Add one slice at quantized position ``z``: O(1).

        ``at_position``: slices already at exactly ``z`` (an indexed count). When it is 0,
        ``below`` and ``above`` are the (up to) two nearest distinct positions already present
        below and above ``z``, nearest first; otherwise they are ignored. Raises
        :class:`ValueError` (leaving the state unchanged) when the neighbours contradict it.
        """
        z = int(z)
        if at_position < 0:
            raise ValueError("at_position must be >= 0")
        if at_position:
            if self.lo is None or self.hi is None or not self.lo <= z <= self.hi:
                raise ValueError(f"no slice at {z} to duplicate")
            if self.multiplicity.get(at_position, 0) < 1:
                raise ValueError(f"no position holds {at_position} slices")
            _bump(self.multiplicity, at_position, -1)
            _bump(self.multiplicity, at_position + 1, 1)
            self.n += 1
            return
        a, a2 = _pad2(below)
        b, b2 = _pad2(above)
        self._check_neighbours(z, a, a2, b, b2)
        self._apply(*self._splice(z, a, a2, b, b2), sign=1)
        if self.lo is None or self.hi is None:
            self.lo = self.hi = z
        else:
            if a is None:
                self.lo_gap, self.lo = self.lo - z, z
            elif a == self.lo:
                self.lo_gap = z - a
            if b is None:
                self.hi_gap, self.hi = z - self.hi, z
            elif b == self.hi:
                self.hi_gap = b - z
        _bump(self.multiplicity, 1, 1)
        self.n += 1

    def remove(
        self,
        z: int,
        below: Sequence[int] = (),
        above: Sequence[int] = (),
        *,
        at_position: int = 1,
    ) -> None:
        """Remove one slice at ``z``: the inverse of :meth:`insert`, O(1).

        ``at_position``: slices at ``z`` *including* the one removed. When it is 1 the position
        disappears and ``below``/``above`` are its (up to) two nearest distinct neighbours.
        """
        z = int(z)
        if at_position < 1 or self.multiplicity.get(at_position, 0) < 1:
            raise ValueError(f"no position holds {at_position} slices")
        if self.lo is None or self.hi is None or not self.lo <= z <= self.hi:
            raise ValueError(f"no slice at {z}")
        if at_position > 1:
            _bump(self.multiplicity, at_position, -1)
            _bump(self.multiplicity, at_position - 1, 1)
            self.n -= 1
            return
        a, a2 = _pad2(below)
        b, b2 = _pad2(above)
        ordered = [v for v in (a2, a, z, b, b2) if v is not None]
        if any(x >= y for x, y in itertools.pairwise(ordered)):
            raise ValueError(f"neighbours of {z} are not distinct and ordered: {ordered}")
        if (a is None) != (z == self.lo) or (b is None) != (z == self.hi):
            raise ValueError(f"neighbours of {z} contradict the lowest/highest positions")
        if (a is not None and a2 is None and a != self.lo) or (
            b is not None and b2 is None and b != self.hi
        ):
            raise ValueError(f"neighbours of {z} contradict the lowest/highest positions")
        self._apply(*self._splice(z, a, a2, b, b2), sign=-1)
        _bump(self.multiplicity, 1, -1)
        self.n -= 1
        if a is None and b is None:
            self.lo = self.hi = self.lo_gap = self.hi_gap = None
            return
        if a is None:
            self.lo, self.lo_gap = b, (b2 - b if b is not None and b2 is not None else None)
        elif b is not None and a == self.lo:
            self.lo_gap = b - a
        if b is None:
            self.hi, self.hi_gap = a, (a - a2 if a is not None and a2 is not None else None)
        elif a is not None and b == self.hi:
            self.hi_gap = b - a
        if self.lo == self.hi:
            self.lo_gap = self.hi_gap = None

    def merge(self, other: GapStats) -> GapStats:
        """Statistics of the union of two stacks whose position ranges do not overlap.

        Returns a new object. Raises :class:`ValueError` when the ranges interleave or touch
        (rebuild with :meth:`from_positions` then).
        """
        if other.lo is None or other.hi is None:
            return self.copy()
        if self.lo is None or self.hi is None:
            return other.copy()
        if self.hi < other.lo:
            low, high = self, other
        elif other.hi < self.lo:
            low, high = other, self
        else:
            raise ValueError("position ranges overlap: merge needs disjoint ranges")
        assert low.hi is not None and high.lo is not None
        bridge = high.lo - low.hi
        out = low.copy()
        out.n += high.n
        for key, count in high.multiplicity.items():
            _bump(out.multiplicity, key, count)
        for gap, count in high.gaps.items():
            _bump(out.gaps, gap, count)
        for pair, count in high.pairs.items():
            _bump(out.pairs, pair, count)
        _bump(out.gaps, bridge, 1)
        if low.hi_gap is not None:
            _bump(out.pairs, (low.hi_gap, bridge), 1)
        if high.lo_gap is not None:
            _bump(out.pairs, (bridge, high.lo_gap), 1)
        out.hi = high.hi
        out.lo_gap = low.lo_gap if low.lo_gap is not None else bridge
        out.hi_gap = high.hi_gap if high.hi_gap is not None else bridge
        return out

    def copy(self) -> GapStats:
        return GapStats(
            n=self.n,
            multiplicity=dict(self.multiplicity),
            gaps=dict(self.gaps),
            pairs=dict(self.pairs),
            lo=self.lo,
            hi=self.hi,
            lo_gap=self.lo_gap,
            hi_gap=self.hi_gap,
        )

    # -- serialization -----------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """JSON-able state (see the module docstring for the format)."""
        return {
            "version": GAPSTATS_VERSION,
            "quantum_mm": POSITION_QUANTUM_MM,
            "n": self.n,
            "lo": self.lo,
            "hi": self.hi,
            "lo_gap": self.lo_gap,
            "hi_gap": self.hi_gap,
            "multiplicity": {str(k): v for k, v in sorted(self.multiplicity.items())},
            "gaps": {str(k): v for k, v in sorted(self.gaps.items())},
            "pairs": {f"{a},{b}": v for (a, b), v in sorted(self.pairs.items())},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GapStats:
        if data.get("version") != GAPSTATS_VERSION:
            raise ValueError(f"unsupported GapStats version {data.get('version')!r}")
        if float(data.get("quantum_mm", POSITION_QUANTUM_MM)) != POSITION_QUANTUM_MM:
            raise ValueError("GapStats was built with another quantization step")

        def opt(key: str) -> int | None:
            value = data.get(key)
            return None if value is None else int(value)

        pairs: dict[tuple[int, int], int] = {}
        for key, count in data.get("pairs", {}).items():
            low, high = str(key).split(",")
            pairs[(int(low), int(high))] = int(count)
        return cls(
            n=int(data["n"]),
            multiplicity={int(k): int(v) for k, v in data.get("multiplicity", {}).items()},
            gaps={int(k): int(v) for k, v in data.get("gaps", {}).items()},
            pairs=pairs,
            lo=opt("lo"),
            hi=opt("hi"),
            lo_gap=opt("lo_gap"),
            hi_gap=opt("hi_gap"),
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> GapStats:
        return cls.from_dict(json.loads(text))


# --------------------------------------------------------------------------------------------
# Stack summary (rules 24-30)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CountedFinding:
    """A :class:`Finding` with the number of slices (or gaps) it concerns."""

    finding: Finding
    count: int = 1

    @property
    def code(self) -> str:
        return self.finding.code

    @property
    def severity(self) -> Severity:
        return self.finding.severity

    @property
    def message(self) -> str:
        return self.finding.message

    def to_dict(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "severity": self.severity.value,
            "count": self.count,
            "message": self.message,
        }


def _finding(
    code: str, severity: Severity, count: int, message: str, rule: str, tag: str
) -> CountedFinding:
    return CountedFinding(Finding(code, severity, message, rule=rule, tag=tag), count)


def _mm(value: float) -> str:
    return f"{value:.6g}"


def _round(value: float | None, digits: int = 6) -> float | None:
    return None if value is None else round(value, digits)


@dataclass(frozen=True)
class StackSummary:
    """Z spacing of one stack.

    ``spacing_mm`` is the median gap between consecutive distinct positions along the normal
    (rule 24), ``None`` when undefined: a single position (rule 29), duplicates that are not a
    clean 4D repeat (rule 27), or invalid geometry (rule 22). ``uniform`` follows rule 25.
    ``missing_slices`` counts slices missing per rule 26. ``repeats`` is the number of slices
    at each position: 1 without duplicates, r >= 2 for a clean 4D repeat, ``None`` otherwise.
    ``provisional``: the series is still receiving (rule 26).
    """

    slices: int
    positions: int
    spacing_mm: float | None = None
    min_mm: float | None = None
    max_mm: float | None = None
    uniform: bool | None = None
    missing_slices: int | None = None
    tilt_degrees: float | None = None
    provisional: bool = False
    distinct_gaps_mm: tuple[float, ...] = ()
    repeats: int | None = None
    slice_thickness_mm: float | None = None
    spacing_between_slices_mm: float | None = None
    findings: tuple[CountedFinding, ...] = ()

    @property
    def codes(self) -> list[str]:
        return sorted({f.code for f in self.findings})

    def slice_spacing_dict(self) -> dict[str, Any]:
        """The ``slice_spacing`` object of the series JSON."""
        return {
            "mm": _round(self.spacing_mm),
            "min_mm": _round(self.min_mm),
            "max_mm": _round(self.max_mm),
            "uniform": self.uniform,
            "missing_slices": self.missing_slices,
            "tilt_degrees": _round(self.tilt_degrees, 4),
            "provisional": self.provisional,
            "distinct_gaps_mm": [_round(g) for g in self.distinct_gaps_mm],
            "repeats": self.repeats,
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "slices": self.slices,
            "positions": self.positions,
            "slice_spacing": self.slice_spacing_dict(),
            "slice_thickness_mm": _round(self.slice_thickness_mm),
            "spacing_between_slices_mm": _round(self.spacing_between_slices_mm),
            "findings": [f.to_dict() for f in self.findings],
        }


@dataclass(frozen=True)
class _GapAnalysis:
    median_mm: float
    min_mm: float
    max_mm: float
    uniform: bool
    missing: int
    missing_gaps_mm: tuple[float, ...]
    irregular: int
    clusters_mm: tuple[float, ...]
    run_clusters_mm: tuple[float, ...]


def _kth(items: Sequence[tuple[int, int]], k: int) -> int:
    """The k-th (0-based) value of a multiset given as sorted (value, count) items."""
    seen = 0
    for value, count in items:
        seen += count
        if k < seen:
            return value
    raise IndexError(k)


def _analyse_gaps(stats: GapStats, tolerance: Tolerance) -> _GapAnalysis:
    """Rules 24-26 and 30 from the histograms: O(distinct gaps + distinct pairs)."""
    items = sorted(stats.gaps.items())
    total = sum(c for _, c in items)
    median_um = (_kth(items, (total - 1) // 2) + _kth(items, total // 2)) / 2.0
    median = median_um / _UM_PER_MM
    tol = tolerance.gap_mm(median)
    min_mm, max_mm = items[0][0] / _UM_PER_MM, items[-1][0] / _UM_PER_MM
    uniform = max_mm - median <= tol and median - min_mm <= tol

    # Clusters of distinct gaps (rule 30): a new cluster starts more than tol above the
    # first gap of the current one; each is represented by its most common gap.
    cluster_of: dict[int, int] = {}
    clusters: list[list[tuple[int, int]]] = []
    for gap, count in items:
        if not clusters or (gap - clusters[-1][0][0]) / _UM_PER_MM > tol:
            clusters.append([])
        clusters[-1].append((gap, count))
        cluster_of[gap] = len(clusters) - 1
    representatives = tuple(
        max(members, key=lambda gc: (gc[1], -gc[0]))[0] / _UM_PER_MM for members in clusters
    )

    def on_median(gap: int) -> bool:
        return abs(gap / _UM_PER_MM - median) <= tol

    # A run (rule 30): two adjacent off-median gaps of the same cluster. Gaps of such a
    # cluster are variable spacing, never missing slices, even if they are multiples.
    runs = {
        cluster_of[g1]
        for (g1, g2), _ in stats.pairs.items()
        if cluster_of.get(g1) is not None
        and cluster_of.get(g1) == cluster_of.get(g2)
        and not on_median(g1)
        and not on_median(g2)
    }
    missing = irregular = 0
    missing_gaps: list[float] = []
    for gap, count in items:
        if on_median(gap):
            continue
        gap_mm = gap / _UM_PER_MM
        k = round(gap_mm / median) if median > 0 else 0
        if k >= 2 and abs(gap_mm - k * median) <= tol and cluster_of[gap] not in runs:
            missing += (k - 1) * count
            missing_gaps.append(gap_mm)
        else:
            irregular += count
    return _GapAnalysis(
        median_mm=median,
        min_mm=min_mm,
        max_mm=max_mm,
        uniform=uniform,
        missing=missing,
        missing_gaps_mm=tuple(missing_gaps),
        irregular=irregular,
        clusters_mm=representatives,
        run_clusters_mm=tuple(representatives[i] for i in sorted(runs)),
    )


def _tilt_cosine(
    normal: Sequence[float], first_ipp: Sequence[float], last_ipp: Sequence[float]
) -> float | None:
    """``|d . n|`` for the unit stacking direction ``d`` (rule 28), ``None`` if undefined."""
    direction = [b - a for a, b in zip(first_ipp, last_ipp, strict=True)]
    length = _norm(direction) * _norm(normal)
    if length == 0.0:
        return None
    return min(1.0, abs(_dot(direction, normal)) / length)


def evaluate_stack(
    stats: GapStats,
    *,
    normal: Sequence[float] | None = None,
    first_ipp: Sequence[float] | None = None,
    last_ipp: Sequence[float] | None = None,
    spacing_between_slices: float | None = None,
    slice_thickness: float | None = None,
    modality: str = "",
    receiving: bool = False,
    tolerance: Tolerance = DEFAULT_TOLERANCE,
) -> StackSummary:
    """Summary of one stack from its :class:`GapStats` (shared by batch and incremental).

    ``first_ipp``/``last_ipp``: IPP (0020,0032) of the lowest and highest positions (rule 28);
    ``spacing_between_slices`` (0018,0088) and ``slice_thickness`` (0018,0050): the stack's
    values, cross-checked only (rules 24, 29); ``receiving``: the series is still receiving,
    so missing slices and duplicates are provisional (rule 26).
    """
    findings: list[CountedFinding] = []
    n, positions = stats.n, stats.positions
    provisional_note = "; provisional: the series is still receiving (rule 26)" if receiving else ""
    cosine = (
        _tilt_cosine(normal, first_ipp, last_ipp)
        if positions >= 2 and normal is not None and first_ipp is not None and last_ipp is not None
        else None
    )
    tilt = None if cosine is None else math.degrees(math.acos(cosine))
    if cosine is not None and cosine < 1.0 - tolerance.tilt:
        findings.append(
            _finding(
                SLICE_TILT,
                Severity.WARNING,
                n,
                f"gantry tilt/sheared: the stacking direction of Image Position (Patient) "
                f"{TAG_IPP} is {tilt:.2f} deg from the normal of Image Orientation (Patient) "
                f"{TAG_IOP} (rule 28); Z spacing is reported along the normal",
                "28",
                TAG_IPP,
            )
        )

    near = stats.near_duplicates
    clean_repeat = near == 0 and len(stats.multiplicity) == 1
    repeats: int | None = next(iter(stats.multiplicity)) if clean_repeat else None
    if n == 0:
        repeats = None
    extra = stats.duplicates + near
    if extra:
        if repeats is not None and positions >= 2:
            detail = (
                f"a clean 4D repeat: {repeats} slices at each of {positions} positions; "
                "Z is computed over the distinct positions"
            )
        elif repeats is not None:
            detail = "all at one position: Z is undefined"
        elif near:
            detail = (
                f"{near} pair(s) of positions less than {NEAR_DUPLICATE_UM + 0.5:g} um apart "
                "but not equal: not a clean 4D repeat, Z is undefined"
            )
        else:
            detail = "not a clean 4D repeat (different counts per position): Z is undefined"
        findings.append(
            _finding(
                SLICE_DUPLICATE_POSITION,
                Severity.WARNING,
                extra,
                f"{extra} slice(s) share a position along the normal with another slice "
                f"(Image Position (Patient) {TAG_IPP}, within {NEAR_DUPLICATE_UM + 0.5:g} um): "
                f"{detail} (rule 27){provisional_note}",
                "27",
                TAG_IPP,
            )
        )

    base = StackSummary(
        slices=n,
        positions=positions,
        tilt_degrees=tilt,
        provisional=receiving,
        repeats=repeats,
        slice_thickness_mm=slice_thickness,
        spacing_between_slices_mm=spacing_between_slices,
    )
    sbs_negative = (
        spacing_between_slices is not None
        and spacing_between_slices < 0
        and modality.upper() != "NM"
    )
    if sbs_negative:
        findings.append(
            _finding(
                SPACING_BETWEEN_SLICES_NEGATIVE,
                Severity.WARNING,
                n,
                f"Spacing Between Slices {TAG_SBS} is negative ({_mm(spacing_between_slices or 0)}"
                " mm); only NM may use a negative value (rule 24)",
                "24",
                TAG_SBS,
            )
        )
    if positions < 2 or repeats is None:
        return replace(base, findings=tuple(findings))

    gaps = _analyse_gaps(stats, tolerance)
    z = gaps.median_mm
    tol = tolerance.gap_mm(z)
    if gaps.missing:
        findings.append(
            _finding(
                SLICE_MISSING,
                Severity.WARNING,
                gaps.missing,
                f"{gaps.missing} slice(s) missing: gap(s) of "
                f"{', '.join(_mm(g) for g in gaps.missing_gaps_mm)} mm are whole multiples of "
                f"the median {_mm(z)} mm within {_mm(tol)} mm (rule 26, Image Position "
                f"(Patient) {TAG_IPP}){provisional_note}",
                "26",
                TAG_IPP,
            )
        )
    if gaps.irregular:
        runs = (
            f"; runs of {', '.join(_mm(g) for g in gaps.run_clusters_mm)} mm"
            if gaps.run_clusters_mm
            else ""
        )
        findings.append(
            _finding(
                SLICE_SPACING_NONUNIFORM,
                Severity.WARNING,
                gaps.irregular,
                f"variable slice spacing: {gaps.irregular} gap(s) differ from the median "
                f"{_mm(z)} mm by more than {_mm(tol)} mm (rule 25); distinct gaps "
                f"{', '.join(_mm(g) for g in gaps.clusters_mm)} mm{runs} (rule 30, Image "
                f"Position (Patient) {TAG_IPP})",
                "30",
                TAG_IPP,
            )
        )
    if spacing_between_slices is not None and spacing_between_slices != 0 and not sbs_negative:
        sbs = abs(spacing_between_slices)
        if abs(sbs - z) > tol:
            findings.append(
                _finding(
                    SPACING_BETWEEN_SLICES_MISMATCH,
                    Severity.WARNING,
                    n,
                    f"Spacing Between Slices {TAG_SBS} {_mm(spacing_between_slices)} mm "
                    f"disagrees with the spacing of Image Position (Patient) {TAG_IPP} "
                    f"{_mm(z)} mm by more than {_mm(tol)} mm (rules 24, 25); IPP is used",
                    "24",
                    TAG_SBS,
                )
            )
    if slice_thickness is not None and slice_thickness > 0 and abs(slice_thickness - z) > tol:
        kind = "overlapping slices" if slice_thickness > z else "gaps between slices"
        findings.append(
            _finding(
                SLICE_THICKNESS_DIFFERS,
                Severity.INFO,
                n,
                f"Slice Thickness {TAG_ST} {_mm(slice_thickness)} mm differs from the slice "
                f"spacing {_mm(z)} mm ({kind}); thickness is not spacing (rule 29)",
                "29",
                TAG_ST,
            )
        )
    return replace(
        base,
        spacing_mm=z,
        min_mm=gaps.min_mm,
        max_mm=gaps.max_mm,
        uniform=gaps.uniform,
        missing_slices=gaps.missing,
        distinct_gaps_mm=gaps.clusters_mm,
        findings=tuple(findings),
    )


def summarize_stack(
    projections: Sequence[float],
    ipps: Sequence[Sequence[float]] | None = None,
    *,
    normal: Sequence[float] | None = None,
    spacing_between_slices: float | None = None,
    slice_thickness: float | None = None,
    modality: str = "",
    receiving: bool = False,
    tolerance: Tolerance = DEFAULT_TOLERANCE,
) -> StackSummary:
    """Batch summary of one stack from the projections of its slices (rules 23-30).

    ``projections``: IPP . n per slice (mm, any order, see :func:`project`); ``ipps``: the
    IPPs (0020,0032) of the same slices, in the same order, used with ``normal`` for the tilt
    check (rule 28). Gives the same results as :class:`GapStats` updated one slice at a time.
    """
    keys = [position_um(p) for p in projections]
    stats = GapStats.from_positions(keys)
    first_ipp = last_ipp = None
    if ipps is not None and keys:
        if len(ipps) != len(keys):
            raise ValueError("ipps and projections differ in length")
        first_ipp = tuple(ipps[min(range(len(keys)), key=keys.__getitem__)])
        last_ipp = tuple(ipps[max(range(len(keys)), key=keys.__getitem__)])
    return evaluate_stack(
        stats,
        normal=normal,
        first_ipp=first_ipp,
        last_ipp=last_ipp,
        spacing_between_slices=spacing_between_slices,
        slice_thickness=slice_thickness,
        modality=modality,
        receiving=receiving,
        tolerance=tolerance,
    )


# --------------------------------------------------------------------------------------------
# Stack and series state
# --------------------------------------------------------------------------------------------


def _value_key(value: float) -> float:
    return round(float(value), 6)


def _consensus(counts: Mapping[Any, int]) -> Any:
    """Most common key; ties broken by the smallest key (deterministic). ``None`` if empty."""
    if not counts:
        return None
    return min(counts.items(), key=lambda kv: (-kv[1], kv[0]))[0]


@dataclass
class StackState:
    """Incremental state of one stack: identity, :class:`GapStats` and cross-check values.

    ``first``/``last``: (position, IPP) of the lowest and highest positions (rule 28), the
    first slice to arrive at a new extreme. ``sbs``/``st``: counts of Spacing Between Slices
    and Slice Thickness values (rounded to 1e-6 mm). ``invalid``: slices whose IOP (rule 22)
    or IPP is unusable; they are counted, not positioned.
    """

    identity: StackIdentity
    stats: GapStats = field(default_factory=GapStats)
    first: tuple[int, Vec3] | None = None
    last: tuple[int, Vec3] | None = None
    sbs: dict[float, int] = field(default_factory=dict)
    st: dict[float, int] = field(default_factory=dict)
    modality: str = ""
    invalid: int = 0
    invalid_message: str | None = None
    normal: Vec3 | None = field(init=False, default=None, compare=False)

    def __post_init__(self) -> None:
        try:
            self.normal = slice_normal(self.identity.iop)
        except ValueError:
            self.normal = None

    @property
    def slices(self) -> int:
        return self.stats.n + self.invalid

    def position_of(self, g: SliceGeometry) -> int | None:
        """Quantized position of ``g`` along this stack's normal, ``None`` if unusable."""
        if self._problem(g) is not None or self.normal is None:
            return None
        return position_um(project(g.ipp, self.normal))

    def _problem(self, g: SliceGeometry) -> str | None:
        bad_iop = iop_valid(g.iop)
        if bad_iop is not None:
            return bad_iop.message
        if self.normal is None:
            return f"Image Orientation (Patient) {TAG_IOP} has no slice normal (rule 22)"
        return _ipp_problem(g.ipp)

    def _count_values(self, g: SliceGeometry) -> None:
        if not self.modality and g.modality:
            self.modality = g.modality
        if g.spacing_between_slices is not None:
            _bump(self.sbs, _value_key(g.spacing_between_slices), 1)
        if g.slice_thickness is not None:
            _bump(self.st, _value_key(g.slice_thickness), 1)

    def add(
        self,
        g: SliceGeometry,
        below: Sequence[int] = (),
        above: Sequence[int] = (),
        *,
        at_position: int = 0,
    ) -> int | None:
        """Add one slice (see :meth:`GapStats.insert`); returns its position or ``None``."""
        problem = self._problem(g)
        if problem is not None:
            self.invalid += 1
            if self.invalid_message is None:
                self.invalid_message = problem
            self._count_values(g)
            return None
        assert self.normal is not None
        z = position_um(project(g.ipp, self.normal))
        self.stats.insert(z, below, above, at_position=at_position)
        ipp: Vec3 = (g.ipp[0], g.ipp[1], g.ipp[2])
        if self.first is None or z < self.first[0]:
            self.first = (z, ipp)
        if self.last is None or z > self.last[0]:
            self.last = (z, ipp)
        self._count_values(g)
        return z

    @classmethod
    def from_slices(cls, identity: StackIdentity, slices: Sequence[SliceGeometry]) -> StackState:
        """Batch construction; for equal extremes the first slice in ``slices`` wins."""
        state = cls(identity)
        keys: list[int] = []
        for g in slices:
            problem = state._problem(g)
            if problem is not None:
                state.invalid += 1
                if state.invalid_message is None:
                    state.invalid_message = problem
            else:
                assert state.normal is not None
                z = position_um(project(g.ipp, state.normal))
                keys.append(z)
                ipp: Vec3 = (g.ipp[0], g.ipp[1], g.ipp[2])
                if state.first is None or z < state.first[0]:
                    state.first = (z, ipp)
                if state.last is None or z > state.last[0]:
                    state.last = (z, ipp)
            state._count_values(g)
        state.stats = GapStats.from_positions(keys)
        return state

    def summary(
        self, receiving: bool = False, tolerance: Tolerance = DEFAULT_TOLERANCE
    ) -> StackSummary:
        """Rules 22-30 for this stack."""
        sbs = _consensus(self.sbs)
        st = _consensus(self.st)
        result = evaluate_stack(
            self.stats,
            normal=self.normal,
            first_ipp=self.first[1] if self.first else None,
            last_ipp=self.last[1] if self.last else None,
            spacing_between_slices=sbs,
            slice_thickness=st,
            modality=self.modality,
            receiving=receiving,
            tolerance=tolerance,
        )
        if not self.invalid:
            return result
        invalid = _finding(
            GEOMETRY_INVALID,
            Severity.INVALID,
            self.invalid,
            f"{self.invalid} slice(s) with unusable geometry, Z spacing undefined: "
            f"{self.invalid_message}",
            "22",
            TAG_IOP,
        )
        kept = tuple(f for f in result.findings if f.code in {SPACING_BETWEEN_SLICES_NEGATIVE})
        return replace(
            StackSummary(
                slices=self.slices,
                positions=result.positions,
                provisional=receiving,
                slice_thickness_mm=st,
                spacing_between_slices_mm=sbs,
            ),
            findings=(invalid, *kept),
        )

    def to_dict(self) -> dict[str, Any]:
        def extreme(value: tuple[int, Vec3] | None) -> dict[str, Any] | None:
            return None if value is None else {"z_um": value[0], "ipp": list(value[1])}

        return {
            "identity": self.identity.to_dict(),
            "gaps": self.stats.to_dict(),
            "first": extreme(self.first),
            "last": extreme(self.last),
            "sbs": [[k, v] for k, v in sorted(self.sbs.items())],
            "st": [[k, v] for k, v in sorted(self.st.items())],
            "modality": self.modality,
            "invalid": self.invalid,
            "invalid_message": self.invalid_message,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StackState:
        def extreme(value: Mapping[str, Any] | None) -> tuple[int, Vec3] | None:
            if value is None:
                return None
            x, y, z = (float(v) for v in value["ipp"])
            return int(value["z_um"]), (x, y, z)

        return cls(
            identity=StackIdentity.from_dict(data["identity"]),
            stats=GapStats.from_dict(data["gaps"]),
            first=extreme(data.get("first")),
            last=extreme(data.get("last")),
            sbs={float(k): int(v) for k, v in data.get("sbs", [])},
            st={float(k): int(v) for k, v in data.get("st", [])},
            modality=str(data.get("modality", "")),
            invalid=int(data.get("invalid", 0)),
            invalid_message=data.get("invalid_message"),
        )


@dataclass(frozen=True)
class Placement:
    """Where a slice goes: its stack, its quantized position (``None`` when its geometry is
    unusable) and whether the stack is new."""

    stack_key: str
    position_um: int | None
    new_stack: bool


@dataclass(frozen=True)
class StackReport:
    """One stack of a series: identity, summary, and whether it is the main stack."""

    identity: StackIdentity
    summary: StackSummary
    main: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {**self.identity.to_dict(), "main": self.main, **self.summary.to_dict()}


_PsKey = tuple[float, float] | None


def _ps_text(value: _PsKey) -> str:
    return "absent" if value is None else f"{_mm(value[0])}\\{_mm(value[1])}"


@dataclass(frozen=True)
class SeriesGeometry:
    """Geometry of a series: in-plane consensus, main-stack Z, all stacks, all findings."""

    pixel_spacing: tuple[float, float] | None
    pixel_spacing_consistent: bool
    stacks: tuple[StackReport, ...]
    findings: tuple[CountedFinding, ...]
    receiving: bool = False

    @property
    def main(self) -> StackReport | None:
        return next((s for s in self.stacks if s.main), None)

    @property
    def codes(self) -> list[str]:
        return sorted({f.code for f in self.findings})

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary for the index (see the module docstring)."""
        main = self.main
        summary = main.summary if main else StackSummary(0, 0, provisional=self.receiving)
        row, col = self.pixel_spacing if self.pixel_spacing else (None, None)
        return {
            "pixel_spacing": {
                "row_mm": _round(row),
                "column_mm": _round(col),
                "consistent": self.pixel_spacing_consistent,
            },
            "slice_spacing": summary.slice_spacing_dict(),
            "slice_thickness_mm": _round(summary.slice_thickness_mm),
            "spacing_between_slices_mm": _round(summary.spacing_between_slices_mm),
            "stacks": [s.to_dict() for s in self.stacks],
            "findings": [f.to_dict() for f in self.findings],
        }


@dataclass
class SeriesState:
    """Incremental, JSON-serializable geometry state of a series (rules 21-30).

    ``stacks``: by key, in creation order. ``pixel_spacing``: counts of Pixel Spacing
    (0028,0030) values (rounded to 1e-6 mm, ``None`` = absent) over all slices.
    """

    stacks: dict[str, StackState] = field(default_factory=dict)
    pixel_spacing: dict[_PsKey, int] = field(default_factory=dict)
    iop_tolerance: float = 1e-4

    def locate(self, g: SliceGeometry) -> Placement:
        """Stack key and quantized position of ``g`` (rule 21, 23), without changing state."""
        key = match_stack(g, (s.identity for s in self.stacks.values()), self.iop_tolerance)
        if key is not None:
            return Placement(key, self.stacks[key].position_of(g), False)
        state = StackState(StackIdentity.of(g))
        return Placement(state.identity.key, state.position_of(g), True)

    def add(
        self,
        g: SliceGeometry,
        *,
        below: Sequence[int] = (),
        above: Sequence[int] = (),
        at_position: int = 0,
    ) -> Placement:
        """Add one slice. ``below``/``above``/``at_position``: see :meth:`GapStats.insert`,
        for the stack and position :meth:`locate` returns."""
        placement = self.locate(g)
        if placement.new_stack:
            self.stacks[placement.stack_key] = StackState(StackIdentity.of(g))
        self.stacks[placement.stack_key].add(g, below, above, at_position=at_position)
        _bump(self.pixel_spacing, self._ps_key(g), 1)
        return placement

    @staticmethod
    def _ps_key(g: SliceGeometry) -> _PsKey:
        if g.pixel_spacing is None:
            return None
        return (_value_key(g.pixel_spacing[0]), _value_key(g.pixel_spacing[1]))

    @classmethod
    def from_slices(
        cls, slices: Iterable[SliceGeometry], iop_tolerance: float = 1e-4
    ) -> SeriesState:
        """Batch construction, independent of the order of ``slices``."""
        state = cls(iop_tolerance=iop_tolerance)
        members: dict[str, list[SliceGeometry]] = {}
        identities: dict[str, StackIdentity] = {}
        for g in sorted(slices, key=lambda s: s.sort_key):
            key = match_stack(g, identities.values(), iop_tolerance)
            if key is None:
                identity = StackIdentity.of(g)
                key = identity.key
                identities[key] = identity
                members[key] = []
            members[key].append(g)
            _bump(state.pixel_spacing, cls._ps_key(g), 1)
        for key, group in members.items():
            state.stacks[key] = StackState.from_slices(identities[key], group)
        return state

    def summary(
        self, receiving: bool = False, tolerance: Tolerance = DEFAULT_TOLERANCE
    ) -> SeriesGeometry:
        """Series geometry: rules 21 (mixed stacks), 7 (in-plane consistency), 22-30."""
        findings: list[CountedFinding] = []
        ps = self.pixel_spacing
        values = {k: v for k, v in ps.items() if k is not None}
        consensus: _PsKey = _consensus(values)
        consistent = len(ps) <= 1
        if not consistent:
            total = sum(ps.values())
            differing = total - ps.get(consensus, 0)
            details = ", ".join(
                f"{count} with {_ps_text(value)}"
                for value, count in sorted(ps.items(), key=lambda kv: (-kv[1], str(kv[0])))
                if value != consensus
            )
            reversed_note = ""
            if consensus is not None and (consensus[1], consensus[0]) in ps:
                reversed_note = (
                    f"; {ps[(consensus[1], consensus[0])]} slice(s) carry the reverse order: "
                    "suspect reversed"
                )
            findings.append(
                _finding(
                    SERIES_PIXEL_SPACING_INCONSISTENT,
                    Severity.WARNING,
                    differing,
                    f"Pixel Spacing {TAG_PS} differs across the series: consensus "
                    f"{_ps_text(consensus)} ({ps.get(consensus, 0)} of {total} slices), "
                    f"{details}{reversed_note} (rules 7, 18)",
                    "7",
                    TAG_PS,
                )
            )
        ordered = sorted(self.stacks.values(), key=lambda s: (-s.slices, s.identity.key))
        if len(ordered) > 1:
            findings.append(
                _finding(
                    SERIES_GEOMETRY_MIXED,
                    Severity.WARNING,
                    len(ordered),
                    f"the series holds {len(ordered)} stacks (different Frame of Reference UID "
                    f"{TAG_FOR}, Rows/Columns or Image Orientation (Patient) {TAG_IOP} beyond "
                    f"{self.iop_tolerance:g}): "
                    + ", ".join(
                        f"{s.slices} slice(s) {s.identity.rows}x{s.identity.columns}"
                        for s in ordered
                    )
                    + "; Z spacing is reported for the largest (rule 21)",
                    "21",
                    TAG_IOP,
                )
            )
        reports: list[StackReport] = []
        for index, state in enumerate(ordered):
            summary = state.summary(receiving, tolerance)
            reports.append(StackReport(state.identity, summary, main=index == 0))
            prefix = f"stack {index + 1} of {len(ordered)}: " if len(ordered) > 1 else ""
            for f in summary.findings:
                if prefix:
                    f = replace(f, finding=replace(f.finding, message=prefix + f.message))
                findings.append(f)
        return SeriesGeometry(
            pixel_spacing=consensus,
            pixel_spacing_consistent=consistent,
            stacks=tuple(reports),
            findings=tuple(findings),
            receiving=receiving,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-able state (one DB column per series)."""
        return {
            "version": SERIES_STATE_VERSION,
            "iop_tolerance": self.iop_tolerance,
            "stacks": [s.to_dict() for s in self.stacks.values()],
            "pixel_spacing": [
                [None, None, c] if k is None else [k[0], k[1], c]
                for k, c in sorted(self.pixel_spacing.items(), key=lambda kv: str(kv[0]))
            ],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SeriesState:
        if data.get("version") != SERIES_STATE_VERSION:
            raise ValueError(f"unsupported SeriesState version {data.get('version')!r}")
        state = cls(iop_tolerance=float(data.get("iop_tolerance", 1e-4)))
        for item in data.get("stacks", []):
            stack = StackState.from_dict(item)
            state.stacks[stack.identity.key] = stack
        for row, col, count in data.get("pixel_spacing", []):
            key: _PsKey = None if row is None else (float(row), float(col))
            state.pixel_spacing[key] = int(count)
        return state

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> SeriesState:
        return cls.from_dict(json.loads(text))


def summarize_series(
    slices: Iterable[SliceGeometry],
    receiving: bool = False,
    tolerance: Tolerance = DEFAULT_TOLERANCE,
) -> SeriesGeometry:
    """Batch geometry of a series (rules 21-30), independent of the order of ``slices``.

    Splits the slices into stacks (rule 21), flags ``SERIES_GEOMETRY_MIXED`` when there is
    more than one and ``SERIES_PIXEL_SPACING_INCONSISTENT`` when Pixel Spacing (0028,0030)
    differs between slices, and reports the Z numbers of the main (largest) stack.
    """
    state = SeriesState.from_slices(slices, iop_tolerance=tolerance.iop)
    return state.summary(receiving, tolerance)
