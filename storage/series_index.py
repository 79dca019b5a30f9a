"""Keeping each series' geometry current as its instances are indexed (rulebook G).

Per new slice the work is a handful of indexed look-ups (its nearest distinct
neighbours along the stack normal) and an O(1) update of the series state
(:class:`scp.series.SeriesState`): no file is re-read and nothing grows with
the square of the series size.  A resend, which may move a slice, rebuilds the
series state from the stored per-instance geometry (linear, and rare).

Callers run this inside the instance's write transaction, so the series row is
locked for the update (SQLite: ``BEGIN IMMEDIATE``; PostgreSQL: ``FOR UPDATE``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from scp.series.geometry import DEFAULT_TOLERANCE, SeriesState, SliceGeometry, Tolerance
from storage.models import Instance, InstancePosition, Series

#: An instance with more slices than this (enhanced multi-frame) rebuilds the series state
#: in one batch instead of one neighbour look-up per frame.
BATCH_THRESHOLD = 32


def slices_to_json(slices: Sequence[SliceGeometry]) -> list[dict[str, Any]]:
    return [asdict(g) for g in slices]


def slices_from_json(data: Sequence[dict[str, Any]] | None) -> list[SliceGeometry]:
    out = []
    for item in data or ():
        ps = item.get("pixel_spacing")
        out.append(SliceGeometry(**{**item, "pixel_spacing": tuple(ps) if ps else None}))
    return out


def lock_series(session: Session, series: Series) -> None:
    """Serialize updates of one series across connections and nodes.

    PostgreSQL: ``SELECT ... FOR UPDATE`` on the series row, then re-read the row (another
    node may have changed it since it was loaded).  SQLite: the write transaction already
    holds the database lock (``BEGIN IMMEDIATE``).
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(select(Series.id).where(Series.id == series.id).with_for_update())
        session.refresh(series)


def _neighbours(
    session: Session, series_id: int, stack_key: str, position: int
) -> tuple[list[int], list[int], int]:
    base = select(InstancePosition.position_um).where(
        InstancePosition.series_id == series_id, InstancePosition.stack_key == stack_key
    )
    below = session.scalars(
        base.where(InstancePosition.position_um < position)
        .distinct()
        .order_by(InstancePosition.position_um.desc())
        .limit(2)
    ).all()
    above = session.scalars(
        base.where(InstancePosition.position_um > position)
        .distinct()
        .order_by(InstancePosition.position_um.asc())
        .limit(2)
    ).all()
    at = session.scalar(
        select(func.count(InstancePosition.id)).where(
            InstancePosition.series_id == series_id,
            InstancePosition.stack_key == stack_key,
            InstancePosition.position_um == position,
        )
    )
    return list(below), list(above), int(at or 0)


def _rebuild(session: Session, series: Series) -> SeriesState:
    session.execute(delete(InstancePosition).where(InstancePosition.series_id == series.id))
    rows = session.execute(
        select(Instance.id, Instance.geometry).where(Instance.series_id == series.id)
    ).all()
    owner: dict[tuple[str, int | None], int] = {}
    slices: list[SliceGeometry] = []
    for instance_id, geometry in rows:
        for g in slices_from_json(geometry):
            owner[(g.sop_instance_uid, g.frame_number)] = instance_id
            slices.append(g)
    state = SeriesState.from_slices(slices)
    positions = []
    for g in slices:
        placement = state.locate(g)
        if placement.position_um is not None:
            positions.append(
                InstancePosition(
                    series_id=series.id,
                    instance_id=owner[(g.sop_instance_uid, g.frame_number)],
                    frame_number=g.frame_number,
                    stack_key=placement.stack_key,
                    position_um=placement.position_um,
                )
            )
    session.add_all(positions)
    return state


def add_instance_geometry(
    session: Session,
    series: Series,
    instance: Instance,
    slices: Sequence[SliceGeometry],
    *,
    resend: bool,
    tolerance: Tolerance = DEFAULT_TOLERANCE,
) -> None:
    """Fold one instance's slices into its series' geometry and findings."""
    instance.geometry = slices_to_json(slices) if slices else None
    session.flush()
    if resend or len(slices) > BATCH_THRESHOLD:
        state = _rebuild(session, series)  # this instance's geometry is flushed already
    else:
        state = (
            SeriesState.from_json(series.geometry_state) if series.geometry_state else SeriesState()
        )
        state = _incremental(session, series, instance, slices, state)
    series.geometry_state = state.to_json()
    codes = sorted({f.code for f in state.summary(True, tolerance).findings})
    series.finding_codes = "," + ",".join(codes) + "," if codes else ""


def _incremental(
    session: Session,
    series: Series,
    instance: Instance,
    slices: Sequence[SliceGeometry],
    state: SeriesState,
) -> SeriesState:
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
            below, above, at = _neighbours(
                session, series.id, placement.stack_key, placement.position_um
            )
        state.add(g, below=below, above=above, at_position=at)
        session.add(
            InstancePosition(
                series_id=series.id,
                instance_id=instance.id,
                frame_number=g.frame_number,
                stack_key=placement.stack_key,
                position_um=placement.position_um,
            )
        )
        session.flush()
    return state


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
