"""Read models of the index for the HTTP API, the CLI and C-FIND: SERIES and INSTANCE.

Pages use keyset pagination on the row id (an opaque cursor), so a page costs
the same at the first and the ten-thousandth series.
"""

from __future__ import annotations

import base64
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, selectinload

from scp.series import DEFAULT_TOLERANCE, Tolerance, compose_series
from storage.models import Instance, InstanceFinding, Series, Study
from storage.series_index import series_geometry, series_state_name

MAX_LIMIT = 1000
STATES = ("receiving", "settled")


class NotFound(LookupError):
    pass


def encode_cursor(row_id: int) -> str:
    return base64.urlsafe_b64encode(f"v1:{row_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        version, _, value = raw.partition(":")
        if version != "v1":
            raise ValueError
        return int(value)
    except (ValueError, UnicodeDecodeError):
        raise ValueError(f"cursor {cursor!r} is not one this API issued") from None


def parse_limit(value: str | None, default: int = 100) -> int:
    if value in (None, ""):
        return default
    try:
        limit = int(value)
    except ValueError:
        raise ValueError(f"limit {value!r} is not an integer") from None
    if not 1 <= limit <= MAX_LIMIT:
        raise ValueError(f"limit must be between 1 and {MAX_LIMIT}")
    return limit


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.isoformat()


class IndexQueries:
    """Queries over one session factory's index, with the node's series settings."""

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
        query = select(Series, Study.study_instance_uid).join(Study, Series.study_id == Study.id)
        if study_instance_uid:
            query = query.where(Study.study_instance_uid == study_instance_uid)
        if modality:
            query = query.where(Series.modality == modality)
        if code:
            # Series codes (geometry, recomputed per instance) or any instance's finding;
            # the instance side is one uncorrelated look-up on ix_instance_findings_code.
            with_instance_finding = (
                select(Instance.series_id)
                .join(InstanceFinding, InstanceFinding.instance_id == Instance.id)
                .where(InstanceFinding.code == code)
            )
            query = query.where(
                Series.finding_codes.contains(f",{code},") | Series.id.in_(with_instance_finding)
            )
        if state:
            if state not in STATES:
                raise ValueError(f"state must be one of {', '.join(STATES)}")
            boundary = datetime.now(UTC) - timedelta(seconds=self.quiet_seconds)
            query = query.where(
                Series.last_received_at > boundary
                if state == "receiving"
                else Series.last_received_at <= boundary
            )
        if cursor:
            query = query.where(Series.id < decode_cursor(cursor))
        rows = session.execute(query.order_by(Series.id.desc()).limit(limit + 1)).all()
        page = rows[:limit]
        items = self.series_dicts(session, [(s, uid) for s, uid in page])
        next_cursor = encode_cursor(page[-1][0].id) if len(rows) > limit else None
        return items, next_cursor

    def get_series(self, session: Session, series_instance_uid: str) -> dict[str, Any]:
        row = session.execute(
            select(Series, Study.study_instance_uid)
            .join(Study, Series.study_id == Study.id)
            .where(Series.series_instance_uid == series_instance_uid)
        ).first()
        if row is None:
            raise NotFound(f"no series {series_instance_uid}")
        return self.series_dicts(session, [(row[0], row[1])])[0]

    def series_dicts(
        self, session: Session, rows: Sequence[tuple[Series, str]]
    ) -> list[dict[str, Any]]:
        if not rows:
            return []
        ids = [s.id for s, _ in rows]
        # Instance findings aggregated per series (one query for the page).
        agg: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for series_id, code, severity, count, message in session.execute(
            select(
                Instance.series_id,
                InstanceFinding.code,
                InstanceFinding.severity,
                func.count(InstanceFinding.id),
                func.min(InstanceFinding.message),
            )
            .join(Instance, InstanceFinding.instance_id == Instance.id)
            .where(Instance.series_id.in_(ids))
            .group_by(Instance.series_id, InstanceFinding.code, InstanceFinding.severity)
        ):
            agg[series_id].append(
                {"code": code, "severity": severity, "count": count, "message": message}
            )
        # Consensus of the instances' effective in-plane spacing and its source.
        spacing: dict[int, tuple[float | None, float | None, str | None, int]] = {}
        for series_id, row_mm, col_mm, source, count in session.execute(
            select(
                Instance.series_id,
                Instance.pixel_spacing_row_mm,
                Instance.pixel_spacing_column_mm,
                Instance.spacing_source,
                func.count(Instance.id),
            )
            .where(Instance.series_id.in_(ids))
            .group_by(
                Instance.series_id,
                Instance.pixel_spacing_row_mm,
                Instance.pixel_spacing_column_mm,
                Instance.spacing_source,
            )
        ):
            best = spacing.get(series_id)
            if best is None or count > best[3] or (best[0] is None and row_mm is not None):
                spacing[series_id] = (row_mm, col_mm, source, count)
        distinct = dict(
            session.execute(
                select(
                    Instance.series_id,
                    func.count(
                        func.distinct(
                            func.coalesce(Instance.pixel_spacing_row_mm, -1.0) * 1000003.0
                            + func.coalesce(Instance.pixel_spacing_column_mm, -1.0)
                        )
                    ),
                )
                .where(Instance.series_id.in_(ids))
                .group_by(Instance.series_id)
            ).all()
        )
        return [
            self._series_dict(
                s, study_uid, agg.get(s.id, []), spacing.get(s.id), distinct.get(s.id, 0)
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
        state = series_state_name(s, self.quiet_seconds)
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
                "last_received_at": _iso(s.last_received_at),
            },
            state=state,
            geometry=series_geometry(s, state == "receiving", self.tolerance),
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
        series = session.scalar(
            select(Series).where(Series.series_instance_uid == series_instance_uid)
        )
        if series is None:
            raise NotFound(f"no series {series_instance_uid}")
        query = (
            select(Instance)
            .where(Instance.series_id == series.id)
            .options(selectinload(Instance.findings), selectinload(Instance.actions))
        )
        if cursor:
            query = query.where(Instance.id > decode_cursor(cursor))
        rows = session.scalars(query.order_by(Instance.id).limit(limit + 1)).all()
        page = rows[:limit]
        items = [instance_dict(i, series_instance_uid) for i in page]
        return items, (encode_cursor(page[-1].id) if len(rows) > limit else None)

    def get_instance(self, session: Session, sop_instance_uid: str) -> dict[str, Any]:
        row = session.execute(
            select(Instance, Series.series_instance_uid)
            .join(Series, Instance.series_id == Series.id)
            .where(Instance.sop_instance_uid == sop_instance_uid)
            .options(selectinload(Instance.findings), selectinload(Instance.actions))
        ).first()
        if row is None:
            raise NotFound(f"no instance {sop_instance_uid}")
        return instance_dict(row[0], row[1])


def instance_dict(inst: Instance, series_uid: str) -> dict[str, Any]:
    """The INSTANCE representation of the API."""
    return {
        "sop_instance_uid": inst.sop_instance_uid,
        "series_instance_uid": series_uid,
        "sop_class_uid": inst.sop_class_uid,
        "transfer_syntax_uid": inst.transfer_syntax_uid,
        "instance_number": inst.instance_number,
        "calling_ae_title": inst.calling_ae_title,
        "received_at": _iso(inst.received_at),
        "receive_count": inst.receive_count,
        "status": inst.status,
        "size_bytes": inst.size_bytes,
        "received_pixel_spacing": inst.received_pixel_spacing,
        "pixel_spacing": {
            "row_mm": inst.pixel_spacing_row_mm,
            "column_mm": inst.pixel_spacing_column_mm,
            "source": inst.spacing_source,
            "calibration": inst.calibration,
        },
        "verdict": inst.verdict,
        "findings": [
            {
                "code": f.code,
                "severity": f.severity,
                "message": f.message,
                "rule": f.rule,
                "tag": f.tag,
            }
            for f in inst.findings
        ],
        "actions": [
            {
                "code": a.code,
                "attribute": a.attribute,
                "path": a.path,
                "old": a.old,
                "new": a.new,
                "reason": a.reason,
            }
            for a in inst.actions
        ],
        "original_kept": inst.original_path is not None,
    }


# -- listings for the CLI ------------------------------------------------------------------


def list_studies(session: Session, limit: int = 1000) -> list[dict[str, Any]]:
    rows = session.execute(
        select(
            Study,
            func.count(func.distinct(Series.id)),
            func.count(Instance.id),
        )
        .outerjoin(Series, Series.study_id == Study.id)
        .outerjoin(Instance, Instance.series_id == Series.id)
        .group_by(Study.id)
        .order_by(Study.updated_at.desc())
        .limit(limit)
    ).all()
    return [
        {
            "study_instance_uid": s.study_instance_uid,
            "patient_id": s.patient_id,
            "accession_number": s.accession_number,
            "study_date": s.study_date,
            "study_description": s.study_description,
            "series_count": n_series,
            "instance_count": n_inst,
            "updated_at": s.updated_at.isoformat(),
        }
        for s, n_series, n_inst in rows
    ]


def list_recent_instances(
    session: Session, series_instance_uid: str | None = None, limit: int = 1000
) -> list[dict[str, Any]]:
    """INSTANCEs, most recently received first (``spacing-scp instances``)."""
    query = (
        select(Instance, Series.series_instance_uid)
        .join(Series, Instance.series_id == Series.id)
        .options(selectinload(Instance.findings), selectinload(Instance.actions))
    )
    if series_instance_uid:
        query = query.where(Series.series_instance_uid == series_instance_uid)
    rows = session.execute(query.order_by(Instance.received_at.desc()).limit(limit)).all()
    return [instance_dict(inst, uid) for inst, uid in rows]
