"""Writing instances into the index and reading it back.

Each received instance is indexed in one short write transaction
(:func:`storage.db.write_session`): its study and series are created or
updated, the instance row is inserted or (for a resend of the same SOP
Instance UID) replaced, with its findings and actions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from scp.series.geometry import DEFAULT_TOLERANCE, SliceGeometry, Tolerance
from storage.models import Instance, InstanceAction, InstanceFinding, Series, Study
from storage.series_index import add_instance_geometry, lock_series


@dataclass(frozen=True)
class FindingRow:
    code: str
    severity: str
    message: str
    rule: str | None = None
    tag: str | None = None


@dataclass(frozen=True)
class ActionRow:
    code: str
    reason: str
    attribute: str
    path: str
    old: str | None
    new: str | None


@dataclass
class IndexEntry:
    """Everything the index records about one received instance."""

    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    path: str
    size_bytes: int
    calling_ae_title: str
    called_ae_title: str
    received_at: datetime
    status: int
    study: dict[str, str | None] = field(default_factory=dict)
    series: dict[str, str | None] = field(default_factory=dict)
    instance: dict[str, Any] = field(default_factory=dict)
    original_path: str | None = None
    peer_address: str | None = None
    findings: list[FindingRow] = field(default_factory=list)
    actions: list[ActionRow] = field(default_factory=list)
    slices: list[SliceGeometry] = field(default_factory=list)


_STUDY_FIELDS = (
    "patient_id",
    "accession_number",
    "study_date",
    "study_time",
    "study_description",
)
_SERIES_FIELDS = (
    "modality",
    "manufacturer",
    "manufacturer_model_name",
    "station_name",
    "series_number",
    "series_description",
)


def _ensure_row(session: Session, model: Any, key: str, value: str, values: dict[str, Any]) -> Any:
    """Insert the row if missing (``ON CONFLICT DO NOTHING``), then load it.

    Two associations (or two nodes on one PostgreSQL) creating the same study or series at
    once do not fail each other: the loser of the race reads the winner's row.
    """
    column = getattr(model, key)
    row = session.scalar(select(model).where(column == value))
    if row is not None:
        return row
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as dialect_insert
    else:
        from sqlalchemy.dialects.sqlite import insert as dialect_insert  # type: ignore[assignment]
    session.execute(
        dialect_insert(model)
        .values({key: value, **values})
        .on_conflict_do_nothing(index_elements=[key])
    )
    return session.scalar(select(model).where(column == value))


def _get_or_create_study(session: Session, entry: IndexEntry) -> Study:
    study: Study = _ensure_row(
        session,
        Study,
        "study_instance_uid",
        entry.study_instance_uid,
        {"created_at": entry.received_at, "updated_at": entry.received_at},
    )
    for name in _STUDY_FIELDS:
        value = entry.study.get(name)
        if value is not None:
            setattr(study, name, value)
    study.updated_at = entry.received_at
    return study


def _get_or_create_series(session: Session, entry: IndexEntry, study: Study) -> Series:
    series: Series = _ensure_row(
        session,
        Series,
        "series_instance_uid",
        entry.series_instance_uid,
        {
            "study_id": study.id,
            "instance_count": 0,
            "corrected_instances": 0,
            "finding_codes": "",
            "created_at": entry.received_at,
            "last_received_at": entry.received_at,
        },
    )
    lock_series(session, series)
    for name in _SERIES_FIELDS:
        value = entry.series.get(name)
        if value is not None:
            setattr(series, name, value)
    series.last_received_at = entry.received_at
    return series


def record_instance(
    session: Session, entry: IndexEntry, tolerance: Tolerance = DEFAULT_TOLERANCE
) -> tuple[Instance, bool]:
    """Insert or replace the instance, update its series geometry; return it and whether
    it was a resend."""
    study = _get_or_create_study(session, entry)
    series = _get_or_create_series(session, entry, study)
    session.flush()
    instance = session.scalar(
        select(Instance).where(Instance.sop_instance_uid == entry.sop_instance_uid)
    )
    resend = instance is not None
    if instance is None:
        instance = Instance(sop_instance_uid=entry.sop_instance_uid, receive_count=1)
        session.add(instance)
    else:
        instance.receive_count = (instance.receive_count or 1) + 1
        instance.findings.clear()
        instance.actions.clear()
    old_series = instance.series if resend else None
    was_corrected = resend and instance.original_path is not None
    instance.series = series
    instance.sop_class_uid = entry.sop_class_uid
    instance.transfer_syntax_uid = entry.transfer_syntax_uid
    instance.path = entry.path
    instance.original_path = entry.original_path
    instance.size_bytes = entry.size_bytes
    instance.calling_ae_title = entry.calling_ae_title
    instance.called_ae_title = entry.called_ae_title
    instance.peer_address = entry.peer_address
    instance.received_at = entry.received_at
    instance.status = entry.status
    instance.verdict = entry.instance.get("verdict") or "ok"
    for name, value in entry.instance.items():
        if name != "verdict":
            setattr(instance, name, value)
    instance.findings.extend(
        InstanceFinding(code=f.code, severity=f.severity, message=f.message, rule=f.rule, tag=f.tag)
        for f in entry.findings
    )
    instance.actions.extend(
        InstanceAction(
            code=a.code, reason=a.reason, attribute=a.attribute, path=a.path, old=a.old, new=a.new
        )
        for a in entry.actions
    )
    # Counts are kept incrementally: no work that grows with the series size.
    if old_series is not None:
        old_series.instance_count -= 1
        old_series.corrected_instances -= int(was_corrected)
    series.instance_count = (series.instance_count or 0) + 1
    series.corrected_instances = (series.corrected_instances or 0) + int(
        entry.original_path is not None
    )
    session.flush()
    add_instance_geometry(
        session, series, instance, entry.slices, resend=resend, tolerance=tolerance
    )
    if resend and old_series is not None and old_series is not series:
        add_instance_geometry(session, old_series, instance, [], resend=True, tolerance=tolerance)
    return instance, resend


# -- reading ---------------------------------------------------------------------------------


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


def list_series(
    session: Session, study_instance_uid: str | None = None, limit: int = 1000
) -> list[dict[str, Any]]:
    query = select(Series, Study.study_instance_uid).join(Study, Series.study_id == Study.id)
    if study_instance_uid:
        query = query.where(Study.study_instance_uid == study_instance_uid)
    rows = session.execute(query.order_by(Series.last_received_at.desc()).limit(limit)).all()
    return [
        {
            "series_instance_uid": s.series_instance_uid,
            "study_instance_uid": study_uid,
            "modality": s.modality,
            "series_number": s.series_number,
            "series_description": s.series_description,
            "manufacturer": s.manufacturer,
            "instance_count": s.instance_count,
            "corrected_instances": s.corrected_instances,
            "last_received_at": s.last_received_at.isoformat(),
        }
        for s, study_uid in rows
    ]


def instance_to_dict(inst: Instance, series_uid: str) -> dict[str, Any]:
    return {
        "sop_instance_uid": inst.sop_instance_uid,
        "series_instance_uid": series_uid,
        "sop_class_uid": inst.sop_class_uid,
        "transfer_syntax_uid": inst.transfer_syntax_uid,
        "instance_number": inst.instance_number,
        "size_bytes": inst.size_bytes,
        "path": inst.path,
        "original_path": inst.original_path,
        "calling_ae_title": inst.calling_ae_title,
        "received_at": inst.received_at.isoformat(),
        "receive_count": inst.receive_count,
        "status": inst.status,
        "received_pixel_spacing": inst.received_pixel_spacing,
        "pixel_spacing": {
            "row_mm": inst.pixel_spacing_row_mm,
            "column_mm": inst.pixel_spacing_column_mm,
            "source": inst.spacing_source,
        },
        "verdict": inst.verdict,
        "findings": [
            {"code": f.code, "severity": f.severity, "message": f.message} for f in inst.findings
        ],
        "actions": [
            {"code": a.code, "attribute": a.attribute, "old": a.old, "new": a.new}
            for a in inst.actions
        ],
    }


def list_instances(
    session: Session, series_instance_uid: str | None = None, limit: int = 1000
) -> list[dict[str, Any]]:
    query = select(Instance, Series.series_instance_uid).join(
        Series, Instance.series_id == Series.id
    )
    if series_instance_uid:
        query = query.where(Series.series_instance_uid == series_instance_uid)
    rows = session.execute(query.order_by(Instance.received_at.desc()).limit(limit)).all()
    return [instance_to_dict(inst, uid) for inst, uid in rows]
