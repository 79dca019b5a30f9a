"""Keeping each series' geometry current as its instances are indexed (rulebook G).

Per new slice the work is one indexed look-up (its nearest distinct neighbours
along the stack normal and the count at its own position) and an O(1) update of
the series state (:class:`scp.series.SeriesState`): no file is re-read and
nothing grows with the square of the series size.  A resend, which may move a
slice, rebuilds the series state from the stored per-instance geometry (linear,
and rare).

This is the hot path of every received instance, so it runs SQLAlchemy Core
statements built once (they hit the compiled cache) on the connection of the
caller's write transaction, never the ORM unit of work.  The caller holds the
series row locked (:func:`storage.index.record_instance` updates it first:
PostgreSQL row lock; SQLite ``BEGIN IMMEDIATE``) and writes the returned state.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from sqlalchemy import Connection, Table, bindparam, delete, func, insert, select, union_all

from scp.series import DEFAULT_TOLERANCE, SeriesState, SliceGeometry, Tolerance
from storage.models import Instance, InstancePosition, Series

#: An instance with more slices than this (enhanced multi-frame) rebuilds the series state
#: in one batch instead of one neighbour look-up per frame.
BATCH_THRESHOLD = 32

_SLICE_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(SliceGeometry))
_POSITIONS = cast(Table, InstancePosition.__table__)
_INSTANCES = cast(Table, Instance.__table__)


def _stack_positions(op: str) -> Any:
    """``position_um, count`` of the distinct positions of one stack on one side of ``:p``
    (``>=``: ascending, the position itself and the two above; ``<``: the two below,
    nearest first), on the index ``(series_id, stack_key, position_um)``."""
    pos = _POSITIONS.c.position_um
    at_or_above = op == ">="
    return (
        select(pos, func.count().label("n"))
        .where(
            _POSITIONS.c.series_id == bindparam("series_id"),
            _POSITIONS.c.stack_key == bindparam("stack_key"),
            pos >= bindparam("p") if at_or_above else pos < bindparam("p"),
        )
        .group_by(pos)
        .order_by(pos if at_or_above else pos.desc())
        .limit(3 if at_or_above else 2)
        .subquery()
    )


_NEIGHBOURS = union_all(select(_stack_positions(">=")), select(_stack_positions("<")))
_DELETE_POSITIONS = delete(_POSITIONS).where(_POSITIONS.c.series_id == bindparam("series_id"))
_INSERT_POSITION = insert(_POSITIONS)
_SERIES_GEOMETRY = select(_INSTANCES.c.id, _INSTANCES.c.geometry).where(
    _INSTANCES.c.series_id == bindparam("series_id")
)


def slices_to_json(slices: Sequence[SliceGeometry]) -> list[dict[str, Any]]:
    """``dataclasses.asdict`` of each slice, without its deep copy (every field is a number,
    a string, ``None`` or a tuple of floats): the same JSON, once per instance."""
    return [{name: getattr(g, name) for name in _SLICE_FIELDS} for g in slices]


def slices_from_json(data: Sequence[dict[str, Any]] | None) -> list[SliceGeometry]:
    out = []
    for item in data or ():
        ps = item.get("pixel_spacing")
        out.append(SliceGeometry(**{**item, "pixel_spacing": tuple(ps) if ps else None}))
    return out


def neighbours(
    conn: Connection, series_id: int, stack_key: str, position: int
) -> tuple[list[int], list[int], int]:
    """The two nearest distinct positions below and above ``position`` in the stack
    (nearest first) and how many slices are at ``position`` itself: one query."""
    below: list[int] = []
    above: list[int] = []
    at = 0
    rows = conn.execute(
        _NEIGHBOURS, {"series_id": series_id, "stack_key": stack_key, "p": position}
    )
    for value, count in rows:
        value = int(value)
        if value < position:
            below.append(value)
        elif value > position:
            above.append(value)
        else:
            at = int(count)
    below.sort(reverse=True)
    above.sort()
    return below, above[:2], at


def _position(
    series_id: int, instance_id: int, g: SliceGeometry, stack_key: str, position: int
) -> dict[str, Any]:
    return {
        "series_id": series_id,
        "instance_id": instance_id,
        "frame_number": g.frame_number,
        "stack_key": stack_key,
        "position_um": position,
    }


def rebuild(conn: Connection, series_id: int) -> SeriesState:
    """The series state and position rows anew from its instances' stored geometry."""
    conn.execute(_DELETE_POSITIONS, {"series_id": series_id})
    owner: dict[tuple[str, int | None], int] = {}
    slices: list[SliceGeometry] = []
    for instance_id, geometry in conn.execute(_SERIES_GEOMETRY, {"series_id": series_id}):
        for g in slices_from_json(geometry):
            owner[(g.sop_instance_uid, g.frame_number)] = instance_id
            slices.append(g)
    state = SeriesState.from_slices(slices)
    positions = []
    for g in slices:
        placement = state.locate(g)
        if placement.position_um is not None:
            instance_id = owner[(g.sop_instance_uid, g.frame_number)]
            positions.append(
                _position(series_id, instance_id, g, placement.stack_key, placement.position_um)
            )
    if positions:
        conn.execute(_INSERT_POSITION, positions)
    return state


def incremental(
    conn: Connection,
    series_id: int,
    instance_id: int,
    slices: Sequence[SliceGeometry],
    state: SeriesState,
) -> SeriesState:
    """Add one instance's slices to ``state`` and their position rows to the index."""
    for g in slices:
        placement = state.locate(g)
        if placement.position_um is None:
            state.add(g)
            continue
        if placement.new_stack:
            below: list[int] = []
            above: list[int] = []
            at = 0
        else:
            below, above, at = neighbours(
                conn, series_id, placement.stack_key, placement.position_um
            )
        state.add(g, below=below, above=above, at_position=at)
        # Written at once: the next frame's look-up must see this one.
        conn.execute(
            _INSERT_POSITION,
            _position(series_id, instance_id, g, placement.stack_key, placement.position_um),
        )
    return state


def finding_codes(state: SeriesState, tolerance: Tolerance = DEFAULT_TOLERANCE) -> str:
    """The series finding codes as ``",CODE,CODE,"`` (``""`` when none), for filtering."""
    codes = sorted({f.code for f in state.summary(True, tolerance).findings})
    return "," + ",".join(codes) + "," if codes else ""


def fold_instance_geometry(
    conn: Connection,
    series_id: int,
    geometry_state: str | None,
    instance_id: int,
    slices: Sequence[SliceGeometry],
    *,
    resend: bool,
    tolerance: Tolerance = DEFAULT_TOLERANCE,
) -> tuple[str, str]:
    """Fold one instance's slices into its series' geometry; return the new
    ``(geometry_state, finding_codes)`` of the series for the caller to write.

    The instance row, with its geometry, is written already.  ``geometry_state`` is the
    series' current state, read under the series lock.  A resend (or an instance with
    more than :data:`BATCH_THRESHOLD` slices) rebuilds the state from every instance of
    the series instead.
    """
    if resend or len(slices) > BATCH_THRESHOLD:
        state = rebuild(conn, series_id)
    else:
        state = SeriesState.from_json(geometry_state) if geometry_state else SeriesState()
        state = incremental(conn, series_id, instance_id, slices, state)
    return state.to_json(), finding_codes(state, tolerance)


def series_state_name(series: Series, quiet_seconds: float, now: datetime | None = None) -> str:
    """``receiving`` until no instance arrived for ``quiet_seconds``, then ``settled``."""
    now = now or datetime.now(UTC)
    last = series.last_received_at
    if last.tzinfo is None:
        last = last.replace(tzinfo=UTC)
    return "settled" if now - last >= timedelta(seconds=quiet_seconds) else "receiving"


def series_geometry(
    series: Series, receiving: bool, tolerance: Tolerance = DEFAULT_TOLERANCE
) -> dict[str, Any] | None:
    """The series geometry summary as JSON (``SeriesGeometry.to_dict``), or ``None``."""
    if not series.geometry_state:
        return None
    return SeriesState.from_json(series.geometry_state).summary(receiving, tolerance).to_dict()
