"""Reads for the operators' web page (issue 19): per-series extras, arrivals per minute,
device rows and slice positions. Plain rows and dicts; :mod:`scp.services.dashboard`
composes them.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from storage.models import Instance, InstanceFinding, InstancePosition, Series, Study
from storage.outbox import as_utc

#: The columns that make a device (issue 19): calling AE title, Station Name (0008,1010),
#: Manufacturer (0008,0070), Manufacturer's Model Name (0008,1090), Software Versions
#: (0018,1020).
DEVICE_COLUMNS = (
    "calling_ae_title",
    "station_name",
    "manufacturer",
    "manufacturer_model_name",
    "software_versions",
)


def series_extras(session: Session, uids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Per Series Instance UID: Patient ID (0010,0020), Study Date (0008,0020), the calling
    AE titles its instances came from (sorted) and the set of its instances' verdicts."""
    out: dict[str, dict[str, Any]] = {}
    if not uids:
        return out
    ids: dict[int, str] = {}
    for sid, uid, patient_id, study_date in session.execute(
        select(Series.id, Series.series_instance_uid, Study.patient_id, Study.study_date)
        .join(Study, Series.study_id == Study.id)
        .where(Series.series_instance_uid.in_(uids))
    ):
        ids[sid] = uid
        out[uid] = {
            "patient_id": patient_id,
            "study_date": study_date,
            "calling_ae_titles": set(),
            "verdicts": set(),
        }
    for sid, ae, verdict in session.execute(
        select(Instance.series_id, Instance.calling_ae_title, Instance.verdict)
        .where(Instance.series_id.in_(ids))
        .distinct()
    ):
        out[ids[sid]]["calling_ae_titles"].add(ae)
        out[ids[sid]]["verdicts"].add(verdict)
    for extra in out.values():
        extra["calling_ae_titles"] = sorted(extra["calling_ae_titles"])
    return out


def series_conditions(
    *,
    calling_ae_title: str | None = None,
    verdict: str | None = None,
    study_date_from: str | None = None,
    study_date_to: str | None = None,
) -> list[Any]:
    """``WHERE`` conditions on ``Series`` matching the web page's extra filters (``None``: no
    filter). ``verdict`` matches series with at least one instance of that verdict
    (``ok``: every instance ok); dates are ``YYYYMMDD`` (DA, PS3.5 6.2), inclusive."""
    conds: list[Any] = []
    if calling_ae_title:
        conds.append(
            Series.id.in_(
                select(Instance.series_id).where(Instance.calling_ae_title == calling_ae_title)
            )
        )
    if verdict == "ok":
        conds.append(Series.id.not_in(select(Instance.series_id).where(Instance.verdict != "ok")))
    elif verdict:
        conds.append(Series.id.in_(select(Instance.series_id).where(Instance.verdict == verdict)))
    if study_date_from or study_date_to:
        dated = select(Study.id)
        if study_date_from:
            dated = dated.where(Study.study_date >= study_date_from)
        if study_date_to:
            dated = dated.where(Study.study_date <= study_date_to)
        conds.append(Series.study_id.in_(dated))
    return conds


def received_since(session: Session, since: datetime) -> list[datetime]:
    """Reception times (UTC) of the instances received since ``since``."""
    return [
        t
        for t in (
            as_utc(v)
            for v in session.scalars(
                select(Instance.received_at).where(Instance.received_at >= since)
            )
        )
        if t is not None
    ]


def last_received(session: Session) -> datetime | None:
    """When the newest instance was indexed (UTC); ``None`` for an empty index."""
    return as_utc(session.scalar(select(func.max(Instance.received_at))))


_DEVICE = (
    Instance.calling_ae_title,
    Series.station_name,
    Series.manufacturer,
    Series.manufacturer_model_name,
    Series.software_versions,
)


def _day(session: Session) -> Any:
    """The UTC day (``YYYY-MM-DD``) a series was first received, as SQL."""
    if session.get_bind().dialect.name == "postgresql":
        return func.to_char(func.timezone("UTC", Series.created_at), "YYYY-MM-DD")
    return func.strftime("%Y-%m-%d", Series.created_at)  # SQLite keeps UTC text


def device_totals(session: Session) -> list[dict[str, Any]]:
    """Per device (:data:`DEVICE_COLUMNS`): ``instances``, ``series`` and ``last_seen``
    (UTC), aggregated by the database."""
    rows = session.execute(
        select(
            *_DEVICE,
            func.count(Instance.id),
            func.count(func.distinct(Instance.series_id)),
            func.max(Instance.received_at),
        )
        .join(Series, Instance.series_id == Series.id)
        .group_by(*_DEVICE)
    )
    return [
        {
            "device": dict(zip(DEVICE_COLUMNS, key, strict=True)),
            "instances": int(count),
            "series": int(series),
            "last_seen": as_utc(last),
        }
        for *key, count, series, last in rows
    ]


def device_days(session: Session) -> dict[tuple[Any, ...], dict[str, int]]:
    """Per device key (the :data:`DEVICE_COLUMNS` values) and UTC day: series received."""
    day = _day(session)
    out: dict[tuple[Any, ...], dict[str, int]] = {}
    for *key, d, count in session.execute(
        select(*_DEVICE, day, func.count(func.distinct(Series.id)))
        .join(Series, Instance.series_id == Series.id)
        .group_by(*_DEVICE, day)
    ):
        out.setdefault(tuple(key), {})[str(d)] = int(count)
    return out


def device_codes(session: Session) -> dict[tuple[Any, ...], dict[str, dict[str, int]]]:
    """Per device key, finding code and UTC day: series carrying the code (a series code
    of its geometry or any instance's finding). Reads flagged series only."""
    day = _day(session)
    flagged: dict[tuple[Any, ...], set[tuple[int, str, str]]] = {}
    for *key, sid, d, code in session.execute(
        select(*_DEVICE, Series.id, day, InstanceFinding.code)
        .join(Series, Instance.series_id == Series.id)
        .join(InstanceFinding, InstanceFinding.instance_id == Instance.id)
        .distinct()
    ):
        flagged.setdefault(tuple(key), set()).add((sid, str(d), code))
    for *key, sid, d, codes in session.execute(
        select(*_DEVICE, Series.id, day, Series.finding_codes)
        .join(Series, Instance.series_id == Series.id)
        .where(Series.finding_codes != "")
        .distinct()
    ):
        for code in (c for c in (codes or "").split(",") if c):
            flagged.setdefault(tuple(key), set()).add((sid, str(d), code))
    out: dict[tuple[Any, ...], dict[str, dict[str, int]]] = {}
    for device, seen in flagged.items():
        for _sid, d, code in seen:
            days = out.setdefault(device, {}).setdefault(code, {})
            days[d] = days.get(d, 0) + 1
    return out


def stack_positions(session: Session, series_id: int) -> dict[str, list[tuple[int, int]]]:
    """Per stack key: ``(position along the normal in micrometres, instance id)`` of every
    slice, sorted by position (rule 23, :mod:`storage.positions`)."""
    out: dict[str, list[tuple[int, int]]] = {}
    for key, pos, iid in session.execute(
        select(
            InstancePosition.stack_key, InstancePosition.position_um, InstancePosition.instance_id
        )
        .where(InstancePosition.series_id == series_id, InstancePosition.instance_id.is_not(None))
        .order_by(InstancePosition.stack_key, InstancePosition.position_um)
    ):
        out.setdefault(key, []).append((int(pos), int(iid or 0)))
    return out
