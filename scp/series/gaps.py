"""Gap statistics of one stack, updated one slice at a time (rules 24-27, 30).

:class:`GapStats` holds, for one stack, histograms of the gaps between consecutive distinct
positions, of pairs of adjacent gaps (to tell runs of gaps, rule 30, from isolated missing
slices, rule 26), and of the number of slices at each position (duplicates and 4D repeats,
rule 27). Positions are quantized projections along the slice normal, integer micrometres
(:func:`scp.series.vectors.position_um`). Inserting a slice is O(1) given its neighbours;
summaries cost O(distinct gaps + distinct adjacent-gap pairs), which for real acquisitions is
a handful.

The neighbours come from the database layer (an indexed query per stack, see
:mod:`scp.series.state`); stale neighbours corrupt the histograms. :class:`GapStats` refuses
updates that would make a count negative or that contradict its known lowest/highest
positions, which catches most races. :meth:`GapStats.remove` undoes an insert.
"""

from __future__ import annotations

import itertools
import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from scp.series.counts import bump
from scp.series.vectors import POSITION_QUANTUM_MM

__all__ = ["GAPSTATS_VERSION", "NEAR_DUPLICATE_UM", "GapStats"]

_K = TypeVar("_K")

#: Gaps of at most this many quantization steps are (near-)duplicate positions (rule 27).
NEAR_DUPLICATE_UM = 1
#: ``version`` of the :meth:`GapStats.to_dict` JSON (persisted inside the series state).
GAPSTATS_VERSION = 1


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

    Positions are integer micrometres (:func:`scp.series.vectors.position_um`). ``n`` counts slices;
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
            bump(self.gaps, key, sign * d)
        for pair, d in pair_delta.items():
            bump(self.pairs, pair, sign * d)

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
            bump(self.multiplicity, at_position, -1)
            bump(self.multiplicity, at_position + 1, 1)
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
        bump(self.multiplicity, 1, 1)
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
            bump(self.multiplicity, at_position, -1)
            bump(self.multiplicity, at_position - 1, 1)
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
        bump(self.multiplicity, 1, -1)
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
            bump(out.multiplicity, key, count)
        for gap, count in high.gaps.items():
            bump(out.gaps, gap, count)
        for pair, count in high.pairs.items():
            bump(out.pairs, pair, count)
        bump(out.gaps, bridge, 1)
        if low.hi_gap is not None:
            bump(out.pairs, (low.hi_gap, bridge), 1)
        if high.lo_gap is not None:
            bump(out.pairs, (bridge, high.lo_gap), 1)
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
        """JSON-able state (see the class docstring for the format)."""
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
