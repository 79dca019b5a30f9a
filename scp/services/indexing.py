"""Indexing one instance: its rows, and its series' geometry kept current (rulebook G).

:func:`index_instance` is what the receive path, ``reindex`` and the tools call: it hands
:func:`storage.index.record_instance` the instance's rows and a
:class:`SeriesGeometryFolder`, which storage calls under the series lock for each series the
instance touches.

Per new slice the work is one indexed look-up (its nearest distinct neighbours along the
stack normal and the count at its own position, :func:`storage.positions.neighbours`) and an
O(1) update of the series state (:class:`scp.series.SeriesState`): no file is re-read and
nothing grows with the square of the series size.  A resend, which may move a slice, rebuilds
the series state from the stored per-instance geometry (linear, and rare).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.orm import Session

from scp.series import DEFAULT_TOLERANCE, SeriesState, SliceGeometry, Tolerance
from storage import positions
from storage.index import IndexedInstance, IndexEntry, SeriesGeometryChange, record_instance
from storage.positions import PositionRow

#: An instance with more slices than this (enhanced multi-frame) rebuilds the series state
#: in one batch instead of one neighbour look-up per frame.
BATCH_THRESHOLD = 32

_SLICE_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(SliceGeometry))


def slices_to_json(slices: Sequence[SliceGeometry]) -> list[dict[str, Any]]:
    """``dataclasses.asdict`` of each slice, without its deep copy (every field is a number,
    a string, ``None`` or a tuple of floats): the same JSON, once per instance."""
    return [{name: getattr(g, name) for name in _SLICE_FIELDS} for g in slices]


def slices_from_json(data: Sequence[dict[str, Any]] | None) -> list[SliceGeometry]:
    """The inverse of :func:`slices_to_json` (JSON arrays come back as tuples)."""
    out = []
    for item in data or ():
        ps = item.get("pixel_spacing")
        decimals = item.get("pixel_spacing_decimals")
        out.append(
            SliceGeometry(
                **{
                    **item,
                    "pixel_spacing": tuple(ps) if ps else None,
                    "pixel_spacing_decimals": tuple(decimals) if decimals else None,
                }
            )
        )
    return out


def _position(
    series_id: int, instance_id: int, g: SliceGeometry, stack_key: str, position: int
) -> PositionRow:
    return {
        "series_id": series_id,
        "instance_id": instance_id,
        "frame_number": g.frame_number,
        "stack_key": stack_key,
        "position_um": position,
    }


def rebuild(conn: Connection, series_id: int) -> SeriesState:
    """The series state and position rows anew from its instances' stored geometry."""
    positions.delete_positions(conn, series_id)
    owner: dict[tuple[str, int | None], int] = {}
    slices: list[SliceGeometry] = []
    for instance_id, geometry in positions.stored_geometry(conn, series_id):
        for g in slices_from_json(geometry):
            owner[(g.sop_instance_uid, g.frame_number)] = instance_id
            slices.append(g)
    state = SeriesState.from_slices(slices)
    rows = []
    for g in slices:
        placement = state.locate(g)
        if placement.position_um is not None:
            instance_id = owner[(g.sop_instance_uid, g.frame_number)]
            rows.append(
                _position(series_id, instance_id, g, placement.stack_key, placement.position_um)
            )
    positions.insert_positions(conn, rows)
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
            below, above, at = positions.neighbours(
                conn, series_id, placement.stack_key, placement.position_um
            )
        state.add(g, below=below, above=above, at_position=at)
        # Written at once: the next frame's look-up must see this one.
        positions.insert_positions(
            conn, _position(series_id, instance_id, g, placement.stack_key, placement.position_um)
        )
    return state


def finding_codes(state: SeriesState, tolerance: Tolerance = DEFAULT_TOLERANCE) -> str:
    """The series finding codes as ``",CODE,CODE,"`` (``""`` when none), for filtering."""
    codes = sorted({f.code for f in state.summary(True, tolerance).findings})
    return "," + ",".join(codes) + "," if codes else ""


class SeriesStates:
    """Series geometry states kept in memory between the instances an indexer folds (its
    batches), so that each instance does not decode its series' state from JSON again.

    A state is handed out only while the index still holds exactly the JSON it was saved
    as (the text is compared: a transaction rolled back, another writer, a restart all
    show as a different text), and it is taken out while it is folded (a fold that fails
    half-way never leaves a half-changed state behind). At most ``limit`` series are kept
    (the least recently folded go first). Not thread-safe: one per indexer thread.
    """

    def __init__(self, limit: int = 256) -> None:
        self.limit = limit
        self._states: OrderedDict[int, tuple[str, SeriesState]] = OrderedDict()
        #: States handed out (not decoded) and decoded, for tests and profiles.
        self.hits = 0
        self.misses = 0

    def take(self, series_id: int, text: str) -> SeriesState:
        """The state of ``series_id`` whose JSON the index holds as ``text``."""
        kept = self._states.pop(series_id, None)
        if kept is not None and kept[0] == text:
            self.hits += 1
            return kept[1]
        self.misses += 1
        return SeriesState.from_json(text)

    def keep(self, series_id: int, text: str, state: SeriesState) -> None:
        """``state`` was saved as ``text`` for ``series_id``."""
        self._states[series_id] = (text, state)
        self._states.move_to_end(series_id)
        while len(self._states) > self.limit:
            self._states.popitem(last=False)


@dataclass(frozen=True)
class SeriesGeometryFolder:
    """The :class:`storage.index.GeometryFold` of one instance: folds its ``slices`` into
    the series that receives them, or rebuilds a series a resend touched. ``states``: the
    indexer's :class:`SeriesStates` (``None``: decode the state from the index each time)."""

    slices: Sequence[SliceGeometry]
    tolerance: Tolerance = DEFAULT_TOLERANCE
    states: SeriesStates | None = None

    def __call__(self, conn: Connection, change: SeriesGeometryChange) -> tuple[str | None, str]:
        slices = self.slices if change.adds_instance else ()
        if change.rebuild or len(slices) > BATCH_THRESHOLD:
            state = rebuild(conn, change.series_id)
        elif not change.geometry_state:
            state = incremental(conn, change.series_id, change.instance_id, slices, SeriesState())
        else:
            state = (
                self.states.take(change.series_id, change.geometry_state)
                if self.states is not None
                else SeriesState.from_json(change.geometry_state)
            )
            state = incremental(conn, change.series_id, change.instance_id, slices, state)
        text = state.to_json()
        if self.states is not None:
            self.states.keep(change.series_id, text, state)
        return text, finding_codes(state, self.tolerance)


@dataclass
class InstanceEntry(IndexEntry):
    """An :class:`storage.index.IndexEntry` with the instance's slice geometry as domain
    values (one :class:`SliceGeometry` per slice or frame; empty without plane geometry)."""

    slices: list[SliceGeometry] = field(default_factory=list)


def index_instance(
    session: Session,
    entry: InstanceEntry,
    tolerance: Tolerance = DEFAULT_TOLERANCE,
    states: SeriesStates | None = None,
) -> tuple[IndexedInstance, bool]:
    """Index one instance and fold its slices into its series' geometry, in the caller's
    write transaction (:func:`storage.db.write_session`); return the instance row and
    whether it was a resend (see :func:`storage.index.record_instance`). ``states``: series
    geometry states kept between calls (:class:`SeriesStates`, the indexer's)."""
    entry.geometry = slices_to_json(entry.slices) if entry.slices else None
    return record_instance(session, entry, SeriesGeometryFolder(entry.slices, tolerance, states))


def series_state_name(
    last_received_at: datetime, quiet_seconds: float, now: datetime | None = None
) -> str:
    """``receiving`` until no instance arrived for ``quiet_seconds`` (seconds), then
    ``settled``."""
    now = now or datetime.now(UTC)
    last = last_received_at
    if last.tzinfo is None:
        last = last.replace(tzinfo=UTC)
    return "settled" if now - last >= timedelta(seconds=quiet_seconds) else "receiving"


def series_geometry(
    geometry_state: str | None, receiving: bool, tolerance: Tolerance = DEFAULT_TOLERANCE
) -> dict[str, Any] | None:
    """The series geometry summary as JSON (``SeriesGeometry.to_dict``), or ``None``."""
    if not geometry_state:
        return None
    return SeriesState.from_json(geometry_state).summary(receiving, tolerance).to_dict()
