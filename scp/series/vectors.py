"""Vectors of the Image Plane: IOP validity, slice normal, projection, quantized position.

Rules 22 and 23 of rulebook section G. Image Orientation (Patient) (0020,0037) holds the
direction cosines of the first row and of the first column (PS3.3 C.7.6.2.1.1); the slice
normal is ``n = row x column`` and a slice's place in its stack is the projection
``IPP . n`` of Image Position (Patient) (0020,0032), in mm (rule 23; never Instance Number or
Slice Location). Z spacing is the difference of consecutive projections (rule 24).

Quantized positions
-------------------
Projections are quantized to integer micrometres (:func:`position_um`,
:data:`POSITION_QUANTUM_MM`). Two slices are at the same position when their quantized
positions are equal; gaps are differences of quantized positions, so they are exact integers
and every derived number is reproducible bit for bit whatever the arrival order. The cost: each
gap carries up to 1 um of rounding, so Z is known to about 1 um, far below any tolerance used
here; positions less than 1.5 um apart that straddle a rounding boundary give a 1 um gap, which
is treated as a (near-)duplicate (:data:`scp.series.gaps.NEAR_DUPLICATE_UM`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from scp.pipeline.model import Finding, Severity
from scp.series.codes import GEOMETRY_INVALID, TAG_IOP, TAG_IPP

__all__ = [
    "POSITION_QUANTUM_MM",
    "UM_PER_MM",
    "Vec3",
    "dot_product",
    "iop_valid",
    "ipp_problem",
    "position_um",
    "project",
    "slice_normal",
    "vector_length",
]

Vec3 = tuple[float, float, float]

#: Positions along the slice normal are quantized to this step (1 um).
POSITION_QUANTUM_MM = 1e-3
#: Quantized positions and gaps are integer micrometres: mm = um / UM_PER_MM.
UM_PER_MM = 1000.0
#: Larger coordinates (10 km) are not patient coordinates: the geometry is invalid.
_MAX_COORDINATE_MM = 1e7


def dot_product(a: Sequence[float], b: Sequence[float]) -> float:
    """Dot product of two 3-vectors."""
    return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]


def _cross(a: Sequence[float], b: Sequence[float]) -> Vec3:
    return (
        a[1] * b[2] - a[2] * b[1],
        a[2] * b[0] - a[0] * b[2],
        a[0] * b[1] - a[1] * b[0],
    )


def vector_length(a: Sequence[float]) -> float:
    """Euclidean length of a 3-vector."""
    return math.sqrt(dot_product(a, a))


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
        len_row, len_col, dot = vector_length(row), vector_length(col), dot_product(row, col)
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


def ipp_problem(ipp: Sequence[float]) -> str | None:
    """Why Image Position (Patient) (0020,0032) is unusable (not 3 finite coordinates within
    10 km), or ``None`` when it is usable."""
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
    length = vector_length(n)
    if not math.isfinite(length) or length < 1e-6:
        raise ValueError(f"IOP {values} has no slice normal")
    return (n[0] / length, n[1] / length, n[2] / length)


def project(ipp: Sequence[float], normal: Sequence[float]) -> float:
    """Rule 23: position of a slice along the stack, ``IPP (0020,0032) . n`` in mm."""
    return dot_product(ipp, normal)


def position_um(projection_mm: float) -> int:
    """A projection quantized to integer micrometres (:data:`POSITION_QUANTUM_MM`).

    Rounds half to even; the database layer stores this value, indexed per stack, to find the
    neighbours of a new slice.
    """
    if not math.isfinite(projection_mm):
        raise ValueError(f"projection {projection_mm!r} is not finite")
    return round(projection_mm * UM_PER_MM)
