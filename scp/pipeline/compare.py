"""Tolerances and comparisons of spacing values (rulebook rules 5, 7, 10, 13, 16, 22).

Two spacings "agree" within a relative tolerance (:func:`close`,
:func:`same_pair`); :func:`reversed_pair` is rule 7's "the same pair in the
other order"; :func:`usable_pair` is a (row, column) pair that rule 5 accepts
(PS3.3 10.7.1.3: first value row spacing, second column spacing, in mm).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from .raw import DSAttr

__all__ = [
    "ERMF_ATOL",
    "IOP_TOL",
    "MATCH_RTOL",
    "PAIR_KEYWORDS",
    "PAR_RTOL",
    "RD_RTOL",
    "REGION_RTOL",
    "close",
    "positive_or_exempt",
    "reversed_pair",
    "same_pair",
    "usable_pair",
]

#: Two spacings are "equal" (rule 10 PS vs IPS, rule 7 reversal) within this
#: relative tolerance: DS text is often rounded to 6 significant digits.
MATCH_RTOL = 1e-4
#: Rule 7: Reconstruction Diameter / Columns against PS; PS is often written
#: with 3-4 digits, so the match is looser.
RD_RTOL = 5e-3
#: Rules 7 and 9: Pixel Aspect Ratio is a pair of integers approximating a ratio.
PAR_RTOL = 5e-3
#: Rule 13: |SID/SOD - ERMF| tolerance.
ERMF_ATOL = 1e-4
#: Rule 22: direction cosine length and orthogonality tolerance.
IOP_TOL = 1e-4
#: Ultrasound region deltas (FD) agree within this relative tolerance (rule 16).
REGION_RTOL = 1e-6

#: The (row, column) pair attributes: PS (0028,0030), IPS (0018,1164), NSPS (0018,2010).
PAIR_KEYWORDS = frozenset({"PixelSpacing", "ImagerPixelSpacing", "NominalScannedPixelSpacing"})


def close(a: float, b: float, rtol: float) -> bool:
    """Relative closeness: |a - b| <= rtol * max(|a|, |b|)."""
    return abs(a - b) <= rtol * max(abs(a), abs(b))


def same_pair(p: Sequence[float], q: Sequence[float], rtol: float = MATCH_RTOL) -> bool:
    return close(p[0], q[0], rtol) and close(p[1], q[1], rtol)


def reversed_pair(p: Sequence[float], q: Sequence[float], rtol: float = MATCH_RTOL) -> bool:
    """``p`` is ``q`` in the other order, and the order matters (rule 7)."""
    return not same_pair(p, q, rtol) and same_pair(p, (q[1], q[0]), rtol)


def usable_pair(
    attr: DSAttr | None,
    rows: int | None,
    columns: int | None,
    comma_decimal: bool = False,
) -> tuple[float, float] | None:
    """(row, column) spacing when the value is VM 2, finite and > 0 (rule 5).

    A zero row value is tolerated when Rows = 1 and a zero column value when
    Columns = 1 (rule 5); the pair is still returned, with the 0.
    """
    if attr is None:
        return None
    numbers = attr.normalized(comma_decimal).numbers
    if numbers is None or len(numbers) != 2:
        return None
    if all(positive_or_exempt(v, i, rows, columns) for i, v in enumerate(numbers)):
        return numbers[0], numbers[1]
    return None


def positive_or_exempt(value: float, index: int, rows: int | None, columns: int | None) -> bool:
    """Rule 5 for value ``index`` (0 row, 1 column): > 0, or 0 for a single row/column."""
    if math.isfinite(value) and value > 0:
        return True
    exempt = rows == 1 if index == 0 else columns == 1
    return value == 0 and exempt
