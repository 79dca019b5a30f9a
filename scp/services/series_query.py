"""The SERIES and INSTANCE representations of the index, for the HTTP API, the CLI and
C-FIND: storage's rows (:mod:`storage.queries`) composed with the series geometry
(:mod:`scp.series`) the same way ``check`` composes its own (:func:`scp.series.compose_series`).

Pages use keyset pagination on the row id (an opaque cursor), so a page costs the same at the
first and the ten-thousandth series.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from scp.pipeline.compare import group_values
from scp.pipeline.ds import ds_number
from scp.series import DEFAULT_TOLERANCE, Tolerance, compose_series
from scp.services.indexing import series_geometry, series_state_name
from storage import queries
from storage.models import Series
from storage.queries import NotFound, SpacingGroup

__all__ = ["STATES", "IndexQueries", "NotFound"]

#: A series is ``receiving`` until it was quiet for ``[series] quiet_seconds``.
STATES = ("receiving", "settled")


class IndexQueries:
    """Queries over one session factory's index, with the node's series settings
    (``quiet_seconds``: seconds without a new instance before a series is settled)."""

    def __init__(self, quiet_seconds: float, tolerance: Tolerance = DEFAULT_TOLERANCE) -> None:
        self.quiet_seconds = quiet_seconds
        self.tolerance = tolerance

    # -- series ------------------------------------------------------------------------------
    def list_series(
        self,
        session: Session,
        *,
        study_instance_uid: str | None = None,
        modality: str | None = None,
        code: str | None = None,
        state: str | None = None,
        limit: int = 100,
        cursor: str | None = None,
        where: Sequence[Any] = (),
    ) -> tuple[list[dict[str, Any]], str | None]:
        """One page of SERIES, newest first, and the next page's cursor;
        :class:`storage.queries.BadQuery` for an unknown ``state`` or a cursor this API did
        not issue. ``where``: more conditions on the series row
        (:func:`storage.dashboard.series_conditions`)."""
        after = at_or_before = None
        if state:
            if state not in STATES:
                raise queries.BadQuery(f"state must be one of {', '.join(STATES)}")
            boundary = datetime.now(UTC) - timedelta(seconds=self.quiet_seconds)
            if state == "receiving":
                after = boundary
            else:
                at_or_before = boundary
        page, next_cursor = queries.select_series_page(
            session,
            study_instance_uid=study_instance_uid,
            modality=modality,
            code=code,
            received_after=after,
            received_at_or_before=at_or_before,
            limit=limit,
            cursor=cursor,
            where=where,
        )
        return self.series_dicts(session, page), next_cursor

    def get_series(self, session: Session, series_instance_uid: str) -> dict[str, Any]:
        """One SERIES; :class:`NotFound` when not indexed."""
        return self.series_dicts(session, [queries.select_series(session, series_instance_uid)])[0]

    def series_dicts(
        self, session: Session, rows: Sequence[tuple[Series, str]]
    ) -> list[dict[str, Any]]:
        """The SERIES representation of series rows (with their Study Instance UIDs)."""
        if not rows:
            return []
        agg = queries.series_aggregates(session, [s.id for s, _ in rows])
        return [
            self._series_dict(
                s,
                study_uid,
                agg.findings.get(s.id, []),
                *spacing_consensus(agg.spacing.get(s.id, [])),
            )
            for s, study_uid in rows
        ]

    def _series_dict(
        self,
        s: Series,
        study_uid: str,
        instance_findings: list[dict[str, Any]],
        spacing: tuple[float | None, float | None, str | None] | None,
        spacing_consistent: bool,
    ) -> dict[str, Any]:
        state = series_state_name(s.last_received_at, self.quiet_seconds)
        return compose_series(
            fields={
                "series_instance_uid": s.series_instance_uid,
                "study_instance_uid": study_uid,
                "modality": s.modality,
                "series_number": s.series_number,
                "series_description": s.series_description,
                "manufacturer": s.manufacturer,
                "manufacturer_model_name": s.manufacturer_model_name,
                "station_name": s.station_name,
                "instance_count": s.instance_count,
                "corrected_instances": s.corrected_instances,
                "deleted_instances": s.deleted_instances,
                "last_received_at": queries.iso(s.last_received_at),
            },
            state=state,
            geometry=series_geometry(s.geometry_state, state == "receiving", self.tolerance),
            instance_findings=instance_findings,
            spacing=spacing,
            spacing_consistent=spacing_consistent,
        )

    # -- instances ---------------------------------------------------------------------------
    def list_instances(
        self,
        session: Session,
        series_instance_uid: str,
        *,
        limit: int = 100,
        cursor: str | None = None,
    ) -> tuple[list[dict[str, Any]], str | None]:
        """One page of a series' INSTANCEs; :class:`NotFound` for an unknown series."""
        return queries.list_instances(session, series_instance_uid, limit=limit, cursor=cursor)

    def get_instance(self, session: Session, sop_instance_uid: str) -> dict[str, Any]:
        """One INSTANCE; :class:`NotFound` when not indexed."""
        return queries.get_instance(session, sop_instance_uid)


_GroupKey = tuple[float | None, float | None, str | None]


def spacing_consensus(
    groups: Sequence[SpacingGroup],
) -> tuple[tuple[float | None, float | None, str | None] | None, bool]:
    """The series' effective in-plane spacing and whether its instances agree (rule 31).

    ``groups``: the index's rows grouped by exact value and decimal places
    (:func:`storage.queries.series_aggregates`). Values that agree to the precision of the
    less precise one (:func:`scp.pipeline.compare.agree`: ``0.976562`` and ``0.9765625``)
    are merged; the consensus is the largest merged group (a group with a spacing before
    one without), given by its most precise value: ``((row mm, column mm, source),
    consistent)``, ``(None, True)`` for a series without instances.
    """
    if not groups:
        return None, True
    counts: dict[_GroupKey, int] = {}
    precision: dict[_GroupKey, int] = {}
    numbers: dict[_GroupKey, Sequence[float]] = {}
    for row, col, row_d, col_d, source, count in groups:
        r = None if row is None else ds_number(row, row_d)
        c = None if col is None else ds_number(col, col_d)
        key = (r, c, source)
        counts[key] = counts.get(key, 0) + count
        precision[key] = min(row_d or 0, col_d or 0)
        if r is not None and c is not None:
            numbers[key] = (r, c)
        elif r is not None or c is not None:
            numbers[key] = (r if r is not None else -1.0, c if c is not None else -1.0)
    merged = group_values(counts.items(), numbers)
    with_spacing = [keys for keys, _ in merged if keys[0][0] is not None or keys[0][1] is not None]
    best = with_spacing[0] if with_spacing else merged[0][0]
    row, col, source = max(best, key=lambda k: precision[k])
    consensus = (
        None if row is None else float(row),
        None if col is None else float(col),
        source,
    )
    return consensus, len(merged) <= 1
