"""Stack identity (rule 21): which slices of a series form one stack.

A stack is a set of slices with the same Frame of Reference UID (0020,0052), Rows (0028,0010),
Columns (0028,0011) and Image Orientation (Patient) (0020,0037) within 1e-4 per component.
:func:`stack_key` quantizes IOP to a 1e-4 grid, which can put two IOPs that differ by less
than 1e-4 into different keys when they straddle a grid boundary; :func:`match_stack` compares
against the reference IOP of the existing stacks with the tolerance and is what
:class:`scp.series.state.SeriesState` uses. The reference IOP of a stack is the one of the
slice that created it, and every slice of the stack is projected on the reference normal, so
projections are comparable. Matching is to the reference, not transitive: with IOPs drifting
by more than the tolerance in small steps, the grouping depends on arrival order.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from scp.series.slices import SliceGeometry

__all__ = ["StackIdentity", "match_stack", "stack_key"]


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
