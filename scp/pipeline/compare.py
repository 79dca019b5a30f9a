"""Tolerances and the one comparison of spacing values (rulebook rules 5, 7, 10, 13, 16, 22,
31-32).

:func:`agree` is the single comparison every rule uses to compare two spacing values (series
consensus, Pixel Measures across frames, ultrasound regions, IPS/PS/NSPS, declared vs
measured, reversal evidence).  Two values agree when

* they are equal to the precision of the less precise one (rule 31): a value read from a
  Decimal String is a :class:`scp.pipeline.ds.DSNumber` that remembers its decimal places,
  and the two agree when ``|a - b| <= 0.5 x 10^-d`` for ``d`` the fewer decimals of the two
  (``0.976562`` and ``0.9765625``: d = 6, |a - b| = 5e-7; ``0.703`` and ``0.703125``:
  d = 3), computed exactly on the decimal text; a number of unknown precision (binary FD,
  a measured gap) takes the other's precision; or
* they lie within the rule's named relative tolerance (``rtol``: :data:`MATCH_RTOL` by
  default), ``|a - b| <= rtol x max(|a|, |b|)``, for writers that truncate.

Values are never bucketed (rounded to a fixed number of decimals): 0.9765625 = 500/512
sits on a rounding midpoint.  :func:`same_pair` and :func:`group_values` apply it to pairs
and to many values; :func:`reversed_pair` is rule 7's "the same pair in the other order",
which needs anisotropy (rule 32); :func:`usable_pair` is a (row, column) pair that rule 5
accepts (PS3.3 10.7.1.3: first value row spacing, second column spacing, in mm).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Mapping, Sequence
from decimal import Decimal
from typing import TypeVar

from .raw import DSAttr

__all__ = [
    "ERMF_ATOL",
    "IOP_TOL",
    "MATCH_RTOL",
    "PAIR_KEYWORDS",
    "PAR_RTOL",
    "RD_RTOL",
    "REGION_RTOL",
    "agree",
    "anisotropic",
    "close",
    "decimals_of",
    "group_values",
    "positive_or_exempt",
    "reversed_pair",
    "same_pair",
    "same_values",
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
    """Relative closeness only: |a - b| <= rtol * max(|a|, |b|). Rules use :func:`agree`."""
    return abs(a - b) <= rtol * max(abs(a), abs(b))


def decimals_of(value: float) -> int | None:
    """Decimal places ``value`` was written with (a DS number), ``None`` when unknown."""
    decimals = getattr(value, "decimals", None)
    return decimals if isinstance(decimals, int) else None


def _exact(value: float) -> Decimal:
    text = getattr(value, "text", None)
    return Decimal(text) if isinstance(text, str) else Decimal(repr(float(value)))


def agree(a: float, b: float, rtol: float = MATCH_RTOL) -> bool:
    """Rule 31: ``a`` and ``b`` (mm, or any spacing quantity) are the same value.

    Equal to the precision of the less precise one (decimal places as written, see the
    module docstring), or within ``rtol`` relative.  Non-finite values agree with nothing.
    """
    if not (math.isfinite(a) and math.isfinite(b)):
        return False
    if a == b or close(a, b, rtol):
        return True
    known = [d for d in (decimals_of(a), decimals_of(b)) if d is not None]
    if not known:
        return False
    half_unit = Decimal(5).scaleb(-min(known) - 1)
    return abs(_exact(a) - _exact(b)) <= half_unit


def anisotropic(pair: Sequence[float], rtol: float = MATCH_RTOL) -> bool:
    """Rule 32: the row and column values of ``pair`` do not agree (:func:`agree`)."""
    return not agree(pair[0], pair[1], rtol)


def same_pair(p: Sequence[float], q: Sequence[float], rtol: float = MATCH_RTOL) -> bool:
    """Both values of the (row, column) pairs agree (:func:`agree`)."""
    return agree(p[0], q[0], rtol) and agree(p[1], q[1], rtol)


def same_values(p: Sequence[float], q: Sequence[float], rtol: float = MATCH_RTOL) -> bool:
    """Value sequences of the same length whose values agree pairwise (:func:`agree`)."""
    return len(p) == len(q) and all(agree(a, b, rtol) for a, b in zip(p, q, strict=True))


def reversed_pair(p: Sequence[float], q: Sequence[float], rtol: float = MATCH_RTOL) -> bool:
    """``p`` is ``q`` in the other order, and the order matters (rules 7, 32): ``q`` is
    anisotropic, ``p`` does not agree with ``q`` but agrees with ``q`` reversed."""
    return anisotropic(q, rtol) and not same_pair(p, q, rtol) and same_pair(p, (q[1], q[0]), rtol)


K = TypeVar("K", bound=Hashable)


def group_values(
    counts: Iterable[tuple[K, int]],
    values: Mapping[K, Sequence[float]],
    rtol: float = MATCH_RTOL,
) -> list[tuple[list[K], int]]:
    """Group counted keys whose values agree (:func:`same_values`), largest group first.

    ``counts``: (key, count) pairs, ``values``: the numbers of each key (keys missing from
    ``values``, e.g. an absent value, form groups of their own).  Greedy, deterministic:
    keys are taken by count (descending), then by key text, and join the first group whose
    first key agrees with them.  Returns ``(keys, total count)`` per group, largest first.
    """
    ordered = sorted(counts, key=lambda kc: (-kc[1], str(kc[0])))
    groups: list[tuple[list[K], int]] = []
    for key, count in ordered:
        for index, (members, total) in enumerate(groups):
            head = members[0]
            if key in values and head in values and same_values(values[key], values[head], rtol):
                members.append(key)
                groups[index] = (members, total + count)
                break
        else:
            groups.append(([key], count))
    groups.sort(key=lambda g: (-g[1], str(g[0][0])))
    return groups


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
