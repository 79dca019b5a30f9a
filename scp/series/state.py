"""Incremental, JSON-serializable geometry state of a series (rules 7, 18, 21-30).

:class:`SeriesState` splits the slices of a series into stacks (rule 21,
:mod:`scp.series.stacks`), keeps one :class:`scp.series.stack_state.StackState` per stack and
counts Pixel Spacing (0028,0030) values over all slices (rules 7, 18). Its JSON
(:meth:`SeriesState.to_json`) is one database column per series (``geometry_state``); its
format is persisted and must not change without a new ``version``.

Incremental indexing
--------------------
The database layer stores the quantized position of every slice (indexed per stack) and, for
each new slice:

1. ``placement = series_state.locate(slice)`` -- the stack key and quantized position;
2. queries the two nearest *distinct* positions below and above it in that stack, and the
   number of slices already at that exact position;
3. ``series_state.add(slice, below=..., above=..., at_position=...)`` and saves
   ``series_state.to_dict()`` (JSON) in the same transaction.

Steps 1-3 must be serialized per series (row lock or optimistic version check): stale
neighbours corrupt the histograms (:class:`scp.series.gaps.GapStats` refuses most of them).
The caller must not add the same SOP Instance (and frame) twice: a re-sent instance would
count as a duplicate position; to remove or replace slices, rebuild the series with
:meth:`SeriesState.from_slices`.

Decisions where the rulebook is silent
--------------------------------------
* Pixel Spacing consistency counts slices (frames of an enhanced instance count one by one,
  rule 18) per value as written (with its decimal places); values that agree by rule 31
  (:func:`scp.pipeline.compare.agree`: ``0.976562`` and ``0.9765625``) are one value, never
  bucketed by rounding; the consensus is the most precise value of the largest group. An
  absent Pixel Spacing is a value of its own. Reversal needs anisotropy (rule 32).
* The main stack is the one with the most slices (ties: the smallest stack key); its Z numbers
  are the series' (rule 21).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from scp.pipeline.compare import decimals_of, group_values, reversed_pair
from scp.pipeline.ds import ds_number
from scp.pipeline.model import Severity
from scp.series.codes import (
    SERIES_GEOMETRY_MIXED,
    SERIES_PIXEL_SPACING_INCONSISTENT,
    TAG_FOR,
    TAG_IOP,
    TAG_PS,
)
from scp.series.counts import bump
from scp.series.reports import (
    CountedFinding,
    SeriesGeometry,
    StackReport,
    counted_finding,
    format_mm,
)
from scp.series.slices import SliceGeometry
from scp.series.stack_state import StackState
from scp.series.stacks import StackIdentity, match_stack
from scp.series.tolerance import DEFAULT_TOLERANCE, Tolerance

__all__ = ["SERIES_STATE_VERSION", "Placement", "SeriesState", "summarize_series"]

#: ``version`` of the :meth:`SeriesState.to_dict` JSON.
SERIES_STATE_VERSION = 1


@dataclass(frozen=True)
class Placement:
    """Where a slice goes: its stack, its quantized position (``None`` when its geometry is
    unusable) and whether the stack is new."""

    stack_key: str
    position_um: int | None
    new_stack: bool


_PsKey = tuple[float, float] | None


def _ps_text(value: _PsKey) -> str:
    return "absent" if value is None else f"{format_mm(value[0])}\\{format_mm(value[1])}"


def _most_precise(keys: Sequence[_PsKey]) -> _PsKey:
    """The key written with the most decimal places (the first on a tie; ``keys`` come
    largest count first)."""

    def precision(key: _PsKey) -> int:
        if key is None:
            return -(10**6)
        return min(decimals_of(key[0]) or 0, decimals_of(key[1]) or 0)

    return max(keys, key=precision)


def _decimals(key: tuple[float, float]) -> list[int]:
    """The decimal places of a Pixel Spacing key for the JSON, ``[]`` when not known."""
    row, column = decimals_of(key[0]), decimals_of(key[1])
    return [] if row is None or column is None else [row, column]


@dataclass
class SeriesState:
    """Incremental, JSON-serializable geometry state of a series (rules 21-30).

    ``stacks``: by key, in creation order. ``pixel_spacing``: counts of Pixel Spacing
    (0028,0030) values (as written, with their decimal places; ``None`` = absent) over all
    slices.
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
        bump(self.pixel_spacing, self._ps_key(g), 1)
        return placement

    @staticmethod
    def _ps_key(g: SliceGeometry) -> _PsKey:
        return g.pixel_spacing

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
            bump(state.pixel_spacing, cls._ps_key(g), 1)
        for key, group in members.items():
            state.stacks[key] = StackState.from_slices(identities[key], group)
        return state

    def summary(
        self, receiving: bool = False, tolerance: Tolerance = DEFAULT_TOLERANCE
    ) -> SeriesGeometry:
        """Series geometry: rules 21 (mixed stacks), 7 (in-plane consistency), 22-30."""
        findings: list[CountedFinding] = []
        ps = self.pixel_spacing
        numbers: dict[_PsKey, Sequence[float]] = {k: k for k in ps if k is not None}
        groups = group_values(ps.items(), numbers)
        present = [g for g in groups if g[0][0] is not None]
        consensus: _PsKey = _most_precise(present[0][0]) if present else None
        in_consensus = next((n for keys, n in groups if consensus in keys), 0)
        consistent = len(groups) <= 1
        if not consistent:
            total = sum(ps.values())
            others = [(keys, n) for keys, n in groups if consensus not in keys]
            details = ", ".join(f"{n} with {_ps_text(_most_precise(keys))}" for keys, n in others)
            reversed_count = sum(
                n
                for keys, n in others
                if consensus is not None
                and keys[0] is not None
                and reversed_pair(keys[0], consensus)
            )
            reversed_note = ""
            if reversed_count:
                reversed_note = (
                    f"; {reversed_count} slice(s) carry the reverse order: suspect reversed"
                )
            findings.append(
                counted_finding(
                    SERIES_PIXEL_SPACING_INCONSISTENT,
                    Severity.WARNING,
                    total - in_consensus,
                    f"Pixel Spacing {TAG_PS} differs across the series: consensus "
                    f"{_ps_text(consensus)} ({in_consensus} of {total} slices), "
                    f"{details}{reversed_note} (rules 7, 18)",
                    "7",
                    TAG_PS,
                )
            )
        ordered = sorted(self.stacks.values(), key=lambda s: (-s.slices, s.identity.key))
        if len(ordered) > 1:
            findings.append(
                counted_finding(
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
                [None, None, c] if k is None else [float(k[0]), float(k[1]), c, *_decimals(k)]
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
        for row, col, count, *decimals in data.get("pixel_spacing", []):
            row_d, col_d = decimals if len(decimals) == 2 else (None, None)
            key: _PsKey = None if row is None else (ds_number(row, row_d), ds_number(col, col_d))
            state.pixel_spacing[key] = state.pixel_spacing.get(key, 0) + int(count)
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
