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
  rule 18), values rounded to 1e-6 mm; an absent Pixel Spacing is a value of its own.
* The main stack is the one with the most slices (ties: the smallest stack key); its Z numbers
  are the series' (rule 21).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from scp.pipeline.model import Severity
from scp.series.codes import (
    SERIES_GEOMETRY_MIXED,
    SERIES_PIXEL_SPACING_INCONSISTENT,
    TAG_FOR,
    TAG_IOP,
    TAG_PS,
)
from scp.series.counts import bump, most_common, value_key
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
        bump(self.pixel_spacing, self._ps_key(g), 1)
        return placement

    @staticmethod
    def _ps_key(g: SliceGeometry) -> _PsKey:
        if g.pixel_spacing is None:
            return None
        return (value_key(g.pixel_spacing[0]), value_key(g.pixel_spacing[1]))

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
        values = {k: v for k, v in ps.items() if k is not None}
        consensus: _PsKey = most_common(values)
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
                counted_finding(
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
