"""Incremental state of one stack: identity, gap statistics, tilt extremes, value counts.

:class:`StackState` is one entry of the series state (:mod:`scp.series.state`) and part of its
persisted JSON (:meth:`StackState.to_dict`). It projects every slice on the normal of the
stack's reference IOP (rule 23), feeds the quantized position to its
:class:`scp.series.gaps.GapStats`, and :meth:`StackState.summary` evaluates it (rules 22-30,
:func:`scp.series.evaluate.evaluate_stack`).

Decisions where the rulebook is silent
--------------------------------------
* The tilt check (rule 28) uses the first slice to reach the lowest and highest positions.
* A slice whose IOP fails rule 22 (or whose IPP is not finite) is counted in its stack but not
  positioned; its stack then has no Z (invalid geometry cannot be used for measurement).
* Spacing Between Slices (0018,0088) and Slice Thickness (0018,0050) of a stack are the most
  common values among its slices (rounded to 1e-6 mm).
* Removing or replacing a slice: :meth:`scp.series.gaps.GapStats.remove` exists, but
  :class:`StackState` does not track what a removal does to the tilt extremes or to the value
  counts; rebuild the series with :meth:`scp.series.state.SeriesState.from_slices` then.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from scp.pipeline.compare import group_values
from scp.pipeline.model import Severity
from scp.series.codes import GEOMETRY_INVALID, SPACING_BETWEEN_SLICES_NEGATIVE, TAG_IOP
from scp.series.counts import bump, value_key
from scp.series.evaluate import evaluate_stack
from scp.series.gaps import GapStats
from scp.series.reports import StackSummary, counted_finding
from scp.series.slices import SliceGeometry
from scp.series.stacks import StackIdentity
from scp.series.tolerance import DEFAULT_TOLERANCE, Tolerance
from scp.series.vectors import Vec3, iop_valid, ipp_problem, position_um, project, slice_normal

__all__ = ["StackState"]


def _declared(counts: Mapping[float, int]) -> float | None:
    """The declared value of most slices, values that agree (rule 31) counted as one: the
    most common value of the largest group (ties: the smallest). ``None`` if none."""
    if not counts:
        return None
    [keys, _], *_ = group_values(counts.items(), {k: (k,) for k in counts})
    return min(keys, key=lambda k: (-counts[k], k))


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
        return ipp_problem(g.ipp)

    def _count_values(self, g: SliceGeometry) -> None:
        if not self.modality and g.modality:
            self.modality = g.modality
        if g.spacing_between_slices is not None:
            bump(self.sbs, value_key(g.spacing_between_slices), 1)
        if g.slice_thickness is not None:
            bump(self.st, value_key(g.slice_thickness), 1)

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
        sbs = _declared(self.sbs)
        st = _declared(self.st)
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
        invalid = counted_finding(
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
