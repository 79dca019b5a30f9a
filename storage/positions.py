"""Slice positions along each stack's normal, as the index stores them (rulebook G).

The series geometry itself is domain code (:mod:`scp.series`); what it needs to persist
crosses into storage as plain rows defined here and filled by the indexing service
(:mod:`scp.services.indexing`):

* :class:`PositionRow`: one slice (an instance, or one frame of a multi-frame instance) at
  its quantized position (integer micrometres) in a stack of its series;
* the per-instance geometry JSON (``instances.geometry``), read back by
  :func:`stored_geometry` when a series is rebuilt.

These statements are on the hot path of every received instance, so they are SQLAlchemy
Core statements built once (they hit the compiled cache) and executed on the connection of
the caller's write transaction, never through the ORM unit of work.  The caller holds the
series row locked (:func:`storage.index.record_instance` updates it first: PostgreSQL row
lock; SQLite ``BEGIN IMMEDIATE``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, TypedDict, cast

from sqlalchemy import Connection, Table, bindparam, delete, func, insert, select, union_all

from storage.models import Instance, InstancePosition


class PositionRow(TypedDict):
    """One row of ``instance_positions``: where a slice sits in its stack."""

    series_id: int
    instance_id: int
    #: Frame Number (1-based) of a multi-frame instance's frame; ``None`` for a single frame.
    frame_number: int | None
    #: The stack identity key (Frame of Reference UID, Rows, Columns, quantized IOP).
    stack_key: str
    #: The projection of Image Position (Patient) on the stack normal, in micrometres.
    position_um: int


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


def neighbours(
    conn: Connection, series_id: int, stack_key: str, position: int
) -> tuple[list[int], list[int], int]:
    """The two nearest distinct positions below and above ``position`` (micrometres) in the
    stack (nearest first) and how many slices are at ``position`` itself: one query."""
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


def insert_positions(conn: Connection, rows: PositionRow | Sequence[PositionRow]) -> None:
    """Write one or more position rows (at once: the next look-up must see them)."""
    if rows:
        conn.execute(_INSERT_POSITION, rows)


def delete_positions(conn: Connection, series_id: int) -> None:
    """Remove every position row of a series (before it is rebuilt)."""
    conn.execute(_DELETE_POSITIONS, {"series_id": series_id})


def stored_geometry(conn: Connection, series_id: int) -> Iterator[tuple[int, list[dict[str, Any]]]]:
    """``(instance id, geometry JSON rows)`` of every instance of a series (``[]`` for an
    instance without plane geometry)."""
    for instance_id, geometry in conn.execute(_SERIES_GEOMETRY, {"series_id": series_id}):
        yield int(instance_id), list(geometry or ())
