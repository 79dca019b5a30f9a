"""Writing instances into the index.

Each received instance is indexed in one short write transaction
(:func:`storage.db.write_session`): its study and series are created or
updated, the instance row is inserted or (for a resend of the same SOP
Instance UID) replaced, with its findings and actions.

The series geometry is domain code: :func:`record_instance` asks the caller's
:class:`GeometryFold` (implemented by :mod:`scp.services.indexing`) for each touched
series' new geometry state, under the series lock, and writes what it returns.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Protocol, cast

from sqlalchemy import Connection, Integer, Table, bindparam, delete, func, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from storage.models import Instance, InstanceAction, InstanceFinding, Series, Study


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
    #: The instance's slice geometry as JSON rows (one per slice or frame; see
    #: :mod:`storage.positions`), ``None`` without plane geometry.
    geometry: list[dict[str, Any]] | None = None
    #: A resend of the node's own corrected output (the sender resent a copy the node
    #: forwarded): the stored file still carries that correction, so the instance's
    #: recorded actions stay when this receipt made none.
    keep_actions: bool = False


@dataclass(frozen=True)
class SeriesGeometryChange:
    """What :func:`record_instance` asks a :class:`GeometryFold` to fold into one series."""

    series_id: int
    #: The series' stored geometry state (JSON), read under its lock; ``None`` when the
    #: series has none yet or is not the entry's (another series losing a resent instance).
    geometry_state: str | None
    instance_id: int
    #: The entry's slices join this series (a new instance, or a resend that changed them).
    adds_instance: bool
    #: Rebuild the state from every instance of the series instead of folding one in.
    rebuild: bool


class GeometryFold(Protocol):
    """Computes a series' new geometry state inside the index transaction.

    Returns ``(geometry_state, finding_codes)``: the state as JSON (``None``: none) and the
    series finding codes as ``",CODE,CODE,"`` (``""`` when none), both written to the
    series row.  It may read and write position rows (:mod:`storage.positions`) on ``conn``.
    """

    def __call__(
        self, conn: Connection, change: SeriesGeometryChange
    ) -> tuple[str | None, str]: ...


_STUDY_FIELDS = (
    "patient_id",
    "patient_name",
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
    "software_versions",
    "series_number",
    "series_description",
)

# -- statements of the write path --------------------------------------------------------------
#
# Built once, at import: executed on the connection of the write transaction they hit
# SQLAlchemy's compiled cache, and nothing goes through the ORM unit of work.

_STUDIES = cast(Table, Study.__table__)
_SERIES = cast(Table, Series.__table__)
_INSTANCES = cast(Table, Instance.__table__)
_FINDINGS = cast(Table, InstanceFinding.__table__)
_ACTIONS = cast(Table, InstanceAction.__table__)

#: Instance columns the entry's ``instance`` mapping may set (the others are set from the
#: entry's own fields, or are bookkeeping).
_INSTANCE_HEADER_COLUMNS: tuple[str, ...] = tuple(
    c.name
    for c in _INSTANCES.columns
    if c.name not in {"id", "sop_instance_uid", "series_id", "receive_count", "verdict", "geometry"}
)
_INSTANCE_HEADER_SET = frozenset(_INSTANCE_HEADER_COLUMNS)


def _refresh(table: Table, key: str, fields: Sequence[str], stamp: str, *returning: str) -> Any:
    """``UPDATE table SET stamp = :at, field = COALESCE(:new_field, field)... WHERE key =
    :uid RETURNING ...``: the fields the entry knows replace the stored ones, the others
    stay (on PostgreSQL the row stays locked until the transaction ends)."""
    return (
        update(table)
        .where(table.c[key] == bindparam("uid"))
        .values(
            {
                stamp: bindparam("at", type_=table.c[stamp].type),
                **{
                    name: func.coalesce(
                        bindparam(f"new_{name}", type_=table.c[name].type), table.c[name]
                    )
                    for name in fields
                },
            }
        )
        .returning(*(table.c[name] for name in returning))
    )


def _insert_new(table: Table, key: str) -> dict[str, Any]:
    """``INSERT ... ON CONFLICT (key) DO NOTHING RETURNING id``, by dialect name: no row
    comes back when the key exists already (or a concurrent transaction just created it)."""
    return {
        name: dialect_insert(table)
        .on_conflict_do_nothing(index_elements=[table.c[key]])
        .returning(table.c.id)
        for name, dialect_insert in (("postgresql", pg_insert), ("sqlite", sqlite_insert))
    }


_STUDY_UPDATE = _refresh(_STUDIES, "study_instance_uid", _STUDY_FIELDS, "updated_at", "id")
_STUDY_INSERT = _insert_new(_STUDIES, "study_instance_uid")
_SERIES_UPDATE = _refresh(
    _SERIES, "series_instance_uid", _SERIES_FIELDS, "last_received_at", "id", "geometry_state"
)
_SERIES_INSERT = _insert_new(_SERIES, "series_instance_uid")
#: The end of an instance's transaction for its series: new geometry, counts moved.
_SERIES_FINISH = (
    update(_SERIES)
    .where(_SERIES.c.id == bindparam("series_id"))
    .values(
        geometry_state=bindparam("new_geometry_state", type_=_SERIES.c.geometry_state.type),
        finding_codes=bindparam("new_finding_codes", type_=_SERIES.c.finding_codes.type),
        instance_count=_SERIES.c.instance_count + bindparam("count_delta", type_=Integer),
        corrected_instances=_SERIES.c.corrected_instances
        + bindparam("corrected_delta", type_=Integer),
    )
)
# Rows about to be updated are locked as an UPDATE locks them (PostgreSQL: FOR NO KEY UPDATE).
#: Another series losing an instance (a resend moved it) is locked before it is rebuilt.
_SERIES_LOCK = (
    select(_SERIES.c.id)
    .where(_SERIES.c.id == bindparam("series_id"))
    .with_for_update(key_share=True)
)
_INSTANCE_INSERT = _insert_new(_INSTANCES, "sop_instance_uid")
_INSTANCE_OF_UID = (
    select(
        _INSTANCES.c.id,
        _INSTANCES.c.series_id,
        _INSTANCES.c.original_path,
        _INSTANCES.c.geometry,
    )
    .where(_INSTANCES.c.sop_instance_uid == bindparam("uid"))
    .with_for_update(key_share=True)
)
#: Executed with the new column values as further parameters (they become the SET clause).
_INSTANCE_REPLACE = (
    update(_INSTANCES)
    .where(_INSTANCES.c.id == bindparam("instance_key"))
    .values(receive_count=func.coalesce(_INSTANCES.c.receive_count, 1) + 1)
)
_FINDINGS_INSERT = insert(_FINDINGS)
_FINDINGS_DELETE = delete(_FINDINGS).where(_FINDINGS.c.instance_id == bindparam("instance_key"))
_ACTIONS_INSERT = insert(_ACTIONS)
_ACTIONS_DELETE = delete(_ACTIONS).where(_ACTIONS.c.instance_id == bindparam("instance_key"))


@dataclass(frozen=True)
class IndexedInstance:
    """The instance row :func:`record_instance` wrote."""

    id: int
    series_id: int
    #: The SOP Instance UID was indexed already: its row was replaced.
    resend: bool


def _study_id(conn: Connection, entry: IndexEntry) -> int:
    """Update the study (created if missing); its id."""
    at = entry.received_at
    changes = {"uid": entry.study_instance_uid, "at": at}
    changes.update({f"new_{name}": entry.study.get(name) for name in _STUDY_FIELDS})
    study_id = conn.execute(_STUDY_UPDATE, changes).scalar()
    if study_id is None:
        row = {"study_instance_uid": entry.study_instance_uid, "created_at": at, "updated_at": at}
        row.update({name: entry.study.get(name) for name in _STUDY_FIELDS})
        study_id = conn.execute(_STUDY_INSERT[conn.dialect.name], row).scalar()
    if study_id is None:  # created by a concurrent transaction meanwhile
        study_id = conn.execute(_STUDY_UPDATE, changes).scalar_one()
    return int(study_id)


def _series_row(conn: Connection, entry: IndexEntry, study_id: int) -> tuple[int, str | None]:
    """Update the series (created if missing) and lock it; its id and geometry state.

    Two associations, or two nodes on one PostgreSQL, indexing into one series wait for
    each other here: the ``UPDATE`` holds the row lock until the transaction ends (SQLite:
    the write transaction holds the database lock already).
    """
    at = entry.received_at
    changes = {"uid": entry.series_instance_uid, "at": at}
    changes.update({f"new_{name}": entry.series.get(name) for name in _SERIES_FIELDS})
    row = conn.execute(_SERIES_UPDATE, changes).first()
    if row is None:
        new = {
            "series_instance_uid": entry.series_instance_uid,
            "study_id": study_id,
            "instance_count": 0,
            "corrected_instances": 0,
            "finding_codes": "",
            "created_at": at,
            "last_received_at": at,
        }
        new.update({name: entry.series.get(name) for name in _SERIES_FIELDS})
        series_id = conn.execute(_SERIES_INSERT[conn.dialect.name], new).scalar()
        if series_id is not None:
            return int(series_id), None
        row = conn.execute(_SERIES_UPDATE, changes).one()  # a concurrent transaction's
    return int(row.id), row.geometry_state


def _instance_values(entry: IndexEntry, series_id: int) -> dict[str, Any]:
    """The instance columns the entry sets."""
    values: dict[str, Any] = {
        "series_id": series_id,
        "sop_class_uid": entry.sop_class_uid,
        "transfer_syntax_uid": entry.transfer_syntax_uid,
        "path": entry.path,
        "original_path": entry.original_path,
        "size_bytes": entry.size_bytes,
        "calling_ae_title": entry.calling_ae_title,
        "called_ae_title": entry.called_ae_title,
        "peer_address": entry.peer_address,
        "received_at": entry.received_at,
        "status": entry.status,
    }
    values.update(
        (name, value) for name, value in entry.instance.items() if name in _INSTANCE_HEADER_SET
    )
    values["verdict"] = entry.instance.get("verdict") or "ok"
    values["geometry"] = entry.geometry or None
    return values


def _same_json(stored: Any, new: Any) -> bool:
    """Whether a JSON column value equals a value about to be written (after a round trip)."""
    return bool(json.loads(json.dumps(new)) == stored)


def record_instance(
    session: Session, entry: IndexEntry, fold: GeometryFold
) -> tuple[IndexedInstance, bool]:
    """Insert or replace the instance, update its study, series and series geometry; return
    the instance row and whether it was a resend.

    Runs in the caller's write transaction (:func:`storage.db.write_session`), on its
    connection, without the ORM: objects the session holds are not refreshed.  A resend (the
    SOP Instance UID is indexed already) replaces the row's values, findings and actions,
    counts one more reception, moves the instance (and its counts) to the entry's series if
    that changed, and has ``fold`` rebuild the geometry of the series concerned.
    """
    session.flush()  # pending ORM changes first: the statements below bypass the session
    conn = session.connection()
    study_id = _study_id(conn, entry)
    series_id, geometry_state = _series_row(conn, entry, study_id)
    values = _instance_values(entry, series_id)
    insert_row = dict.fromkeys(_INSTANCE_HEADER_COLUMNS)
    insert_row.update(values, sop_instance_uid=entry.sop_instance_uid, receive_count=1)
    new_id = conn.execute(_INSTANCE_INSERT[conn.dialect.name], insert_row).scalar()
    resend = new_id is None
    same_geometry = False
    # series id -> (instance count, corrected instances) to add
    deltas = {series_id: [1, int(entry.original_path is not None)]}
    if new_id is not None:
        instance_id = int(new_id)
    else:
        old = conn.execute(_INSTANCE_OF_UID, {"uid": entry.sop_instance_uid}).one()
        instance_id = int(old.id)
        if old.series_id != series_id:
            conn.execute(_SERIES_LOCK, {"series_id": old.series_id})
        # A modality resending a whole study must not cost a rebuild per instance (that
        # would grow with the square of the series): unchanged geometry changes nothing.
        same_geometry = old.series_id == series_id and _same_json(old.geometry, values["geometry"])
        old_counts = deltas.setdefault(int(old.series_id), [0, 0])
        old_counts[0] -= 1
        old_counts[1] -= int(old.original_path is not None)
        conn.execute(_INSTANCE_REPLACE, {"instance_key": instance_id, **values})
        conn.execute(_FINDINGS_DELETE, {"instance_key": instance_id})
        if entry.actions or not entry.keep_actions:
            conn.execute(_ACTIONS_DELETE, {"instance_key": instance_id})
    if entry.findings:
        conn.execute(
            _FINDINGS_INSERT,
            [
                {
                    "instance_id": instance_id,
                    "code": f.code,
                    "severity": f.severity,
                    "message": f.message,
                    "rule": f.rule,
                    "tag": f.tag,
                }
                for f in entry.findings
            ],
        )
    if entry.actions:
        conn.execute(
            _ACTIONS_INSERT,
            [
                {
                    "instance_id": instance_id,
                    "code": a.code,
                    "reason": a.reason,
                    "attribute": a.attribute,
                    "path": a.path,
                    "old": a.old,
                    "new": a.new,
                }
                for a in entry.actions
            ],
        )
    for target, (count_delta, corrected_delta) in deltas.items():
        mine = target == series_id
        state, codes = fold(
            conn,
            SeriesGeometryChange(
                series_id=target,
                geometry_state=geometry_state if mine else None,
                instance_id=instance_id,
                adds_instance=mine and not same_geometry,
                rebuild=resend and not same_geometry,
            ),
        )
        conn.execute(
            _SERIES_FINISH,
            {
                "series_id": target,
                "new_geometry_state": state,
                "new_finding_codes": codes,
                "count_delta": count_delta,
                "corrected_delta": corrected_delta,
            },
        )
    return IndexedInstance(instance_id, series_id, resend), resend


def add_instance_finding(session: Session, instance_id: int, finding: FindingRow) -> bool:
    """Record ``finding`` on an indexed instance unless it carries that code already (a
    finding met after ingest: an annotation that failed on the way out).  ``True`` when
    added."""
    present = session.scalar(
        select(InstanceFinding.id).where(
            InstanceFinding.instance_id == instance_id, InstanceFinding.code == finding.code
        )
    )
    if present is not None:
        return False
    session.add(InstanceFinding(instance_id=instance_id, **asdict(finding)))
    return True
