"""Reading the index: the rows behind SERIES and INSTANCE, studies, cursors.

The series representation itself is composed by :mod:`scp.services.series_query`.

Pages use keyset pagination on the row id (an opaque cursor), so a page costs
the same at the first and the ten-thousandth series.
"""

from __future__ import annotations

import base64
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, selectinload

from storage.models import Instance, InstanceFinding, Series, Study

MAX_LIMIT = 1000


class NotFound(LookupError):
    """No such series, instance or study in the index (HTTP 404)."""


class BadQuery(ValueError):
    """A query the client got wrong: a cursor this API did not issue, a limit out of range,
    an unknown state (HTTP 400, the message as the problem's detail).  Any other
    ``ValueError`` met while answering is the node's own fault (HTTP 500, no detail)."""


def encode_cursor(row_id: int) -> str:
    return base64.urlsafe_b64encode(f"v1:{row_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        version, _, value = raw.partition(":")
        # The whole text, ASCII digits only: int() would take " 7\n" or non-ASCII digits.
        if version != "v1" or not (value.isascii() and value.isdigit()):
            raise ValueError
        return int(value)
    except (ValueError, UnicodeDecodeError):
        raise BadQuery(f"cursor {cursor!r} is not one this API issued") from None


def parse_limit(value: str | None, default: int = 100) -> int:
    if value in (None, ""):
        return default
    if not (value.isascii() and value.isdigit()):  # the whole text: not " 7\n", not "1_0"
        raise BadQuery(f"limit {value!r} is not an integer")
    limit = int(value)
    if not 1 <= limit <= MAX_LIMIT:
        raise BadQuery(f"limit must be between 1 and {MAX_LIMIT}")
    return limit


def iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.isoformat()


#: ``(row mm, column mm, row decimals, column decimals, source, instance count)``
SpacingGroup = tuple[float | None, float | None, int | None, int | None, str | None, int]


@dataclass
class SeriesAggregates:
    """What the instances of a page of series add to each series row (one query each)."""

    #: series id -> ``{"code", "severity", "count", "message"}`` of its instances' findings
    findings: dict[int, list[dict[str, Any]]]
    #: series id -> its instances' effective in-plane spacings, grouped by exact value and
    #: the decimal places they were written with (rule 31: the caller merges the groups
    #: that agree): ``(row mm, column mm, row decimals, column decimals, source, count)``
    spacing: dict[int, list[SpacingGroup]]


def select_series_page(
    session: Session,
    *,
    study_instance_uid: str | None = None,
    modality: str | None = None,
    code: str | None = None,
    received_after: datetime | None = None,
    received_at_or_before: datetime | None = None,
    limit: int = 100,
    cursor: str | None = None,
    where: Sequence[Any] = (),
) -> tuple[list[tuple[Series, str]], str | None]:
    """One page of series, newest first, with their Study Instance UID, and the cursor of
    the next page (``None`` on the last).  ``code`` matches a series finding code or any of
    its instances' finding codes; the ``received_*`` bounds compare the series' last
    reception time; ``where`` adds conditions on ``Series``."""
    query = (
        select(Series, Study.study_instance_uid)
        .join(Study, Series.study_id == Study.id)
        .where(*where)
    )
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
            # autoescape: a ``_`` or ``%`` in the code is matched as itself, not a wildcard.
            Series.finding_codes.contains(f",{code},", autoescape=True)
            | Series.id.in_(with_instance_finding)
        )
    if received_after is not None:
        query = query.where(Series.last_received_at > received_after)
    if received_at_or_before is not None:
        query = query.where(Series.last_received_at <= received_at_or_before)
    if cursor:
        query = query.where(Series.id < decode_cursor(cursor))
    rows = session.execute(query.order_by(Series.id.desc()).limit(limit + 1)).all()
    page = [(s, uid) for s, uid in rows[:limit]]
    next_cursor = encode_cursor(page[-1][0].id) if len(rows) > limit else None
    return page, next_cursor


def select_series(session: Session, series_instance_uid: str) -> tuple[Series, str]:
    """The series row and its Study Instance UID; :class:`NotFound` when not indexed."""
    row = session.execute(
        select(Series, Study.study_instance_uid)
        .join(Study, Series.study_id == Study.id)
        .where(Series.series_instance_uid == series_instance_uid)
    ).first()
    if row is None:
        raise NotFound(f"no series {series_instance_uid}")
    return row[0], row[1]


def series_aggregates(session: Session, ids: Sequence[int]) -> SeriesAggregates:
    """Instance findings, spacing consensus and distinct spacings of the given series."""
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
    spacing: dict[int, list[SpacingGroup]] = defaultdict(list)
    columns = (
        Instance.series_id,
        Instance.pixel_spacing_row_mm,
        Instance.pixel_spacing_column_mm,
        Instance.pixel_spacing_row_decimals,
        Instance.pixel_spacing_column_decimals,
        Instance.spacing_source,
    )
    for series_id, row_mm, col_mm, row_d, col_d, source, count in session.execute(
        select(*columns, func.count(Instance.id))
        .where(Instance.series_id.in_(ids))
        .group_by(*columns)
    ):
        spacing[series_id].append((row_mm, col_mm, row_d, col_d, source, count))
    return SeriesAggregates(dict(agg), dict(spacing))


def list_instances(
    session: Session,
    series_instance_uid: str,
    *,
    limit: int = 100,
    cursor: str | None = None,
) -> tuple[list[dict[str, Any]], str | None]:
    """One page of a series' INSTANCEs in arrival order; :class:`NotFound` for no series."""
    series = session.scalar(select(Series).where(Series.series_instance_uid == series_instance_uid))
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


def get_instance(session: Session, sop_instance_uid: str) -> dict[str, Any]:
    """One INSTANCE; :class:`NotFound` when not indexed."""
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
        "received_at": iso(inst.received_at),
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
