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

from scp.series import DEFAULT_TOLERANCE, Tolerance, compose_series
from scp.services.indexing import series_geometry, series_state_name
from storage import queries
from storage.models import Series
from storage.queries import NotFound

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
    ) -> tuple[list[dict[str, Any]], str | None]:
        """One page of SERIES, newest first, and the next page's cursor;
        :class:`storage.queries.BadQuery` for an unknown ``state`` or a cursor this API did
        not issue."""
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
                agg.spacing.get(s.id),
                agg.distinct_spacings.get(s.id, 0),
            )
            for s, study_uid in rows
        ]

    def _series_dict(
        self,
        s: Series,
        study_uid: str,
        instance_findings: list[dict[str, Any]],
        spacing: tuple[float | None, float | None, str | None, int] | None,
        distinct_spacings: int,
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
                "last_received_at": queries.iso(s.last_received_at),
            },
            state=state,
            geometry=series_geometry(s.geometry_state, state == "receiving", self.tolerance),
            instance_findings=instance_findings,
            spacing=spacing[:3] if spacing else None,
            spacing_consistent=distinct_spacings <= 1,
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
