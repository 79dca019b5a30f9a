"""Deleting instances from the index and the store, crash-safe (issue 20).

A deletion *marks, commits, then unlinks*: :func:`delete_instances` removes the index rows
(their findings, actions, positions and forward jobs go with them), moves the series
counts (``instance_count`` down, ``deleted_instances`` up; a series, then a study, left
without instances is removed), records the deletion (table ``deletions``) and writes one
``pending_unlinks`` row per file, all in the caller's one write transaction.  Only then does
:func:`finish_pending` unlink the files and drop those rows.  A kill at any moment leaves
either the rows (nothing happened) or the pending rows (the next :func:`finish_pending`,
run at start and by every pass, unlinks the rest): never an index row whose file is
missing, never a file nobody knows about.

A file rewritten since its row was indexed (a resend whose record is still in the ingest
journal, :mod:`storage.journal`) is never unlinked: the caller first waits until every
instance acknowledged so far is indexed (``scp.services.retention``: read-your-writes, and
no unlink at all while the index is behind), and a file whose SOP Instance UID is indexed
again, or whose modification time is later than the deleted row's ``received_at`` by more
than ``settle_s`` (at least :data:`WRITE_MARGIN_S`), is kept.  The selections (:func:`deletable`,
:func:`oldest_studies`) therefore only take instances received at least ``settle_s`` ago.

What may go (``only_when_delivered``): an instance none of whose forward jobs is anything
but ``done`` (PS3.4 B.2.3: the destination answered Success), i.e. every destination that
routes it confirmed it; never one with a job ``pending``, ``in_flight`` or ``dead``.
"""

from __future__ import annotations

import contextlib
import os
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

from sqlalchemy import (
    ColumnElement,
    Table,
    and_,
    delete,
    exists,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session, sessionmaker

from storage.db import write_session
from storage.filestore import FileStore, fsync_dir
from storage.models import (
    Deletion,
    ForwardJob,
    Instance,
    PendingUnlink,
    RetentionLock,
    Series,
    Study,
)
from storage.outbox import as_utc

#: Seconds a file's modification time may follow its row's ``received_at`` (the reception
#: time is taken before the file is written into place) before the file counts as rewritten
#: by a later resend.
WRITE_MARGIN_S = 5.0

#: Rules a deletion is recorded under (``deletions.reason``).
REASONS = ("keep_days", "keep_flagged_days", "watermark", "manual")

_DELETIONS = cast(Table, Deletion.__table__)


@dataclass(frozen=True)
class Candidate:
    """An instance a deletion may remove (sizes in bytes, paths relative to the store)."""

    instance_id: int
    sop_instance_uid: str
    series_id: int
    series_instance_uid: str
    study_instance_uid: str
    size_bytes: int
    path: str
    original_path: str | None
    received_at: datetime


@dataclass(frozen=True)
class Deleted:
    """What one :func:`delete_instances` removed from the index."""

    deletion_ids: list[int]
    instances: int
    bytes: int


def undelivered() -> ColumnElement[bool]:
    """An instance has a forward job that is not ``done`` (pending, in flight or dead)."""
    return exists().where(ForwardJob.instance_id == Instance.id, ForwardJob.state != "done")


def flagged() -> ColumnElement[bool]:
    """The instance's series has a finding or a corrected instance (``keep_flagged_days``)."""
    return or_(Series.finding_codes != "", Series.corrected_instances > 0)


_COLUMNS = (
    Instance.id,
    Instance.sop_instance_uid,
    Instance.series_id,
    Series.series_instance_uid,
    Study.study_instance_uid,
    Instance.size_bytes,
    Instance.path,
    Instance.original_path,
    Instance.received_at,
)


def _candidates(rows: Iterable[Any]) -> list[Candidate]:
    return [
        Candidate(
            int(r[0]), r[1], int(r[2]), r[3], r[4], int(r[5]), r[6], r[7], as_utc(r[8]) or r[8]
        )
        for r in rows
    ]


def _joined() -> Any:
    return select(*_COLUMNS).join(Series, Instance.series_id == Series.id).join(Study)


def deletable(
    session: Session,
    *,
    received_before: datetime,
    flagged_received_before: datetime,
    only_when_delivered: bool,
    limit: int,
) -> list[Candidate]:
    """Instances the age rules allow to go, oldest reception first: received before
    ``received_before`` (a flagged series: before ``flagged_received_before``) and, with
    ``only_when_delivered``, confirmed by every destination that routes them."""
    query = _joined().where(
        or_(
            and_(~flagged(), Instance.received_at < received_before),
            and_(flagged(), Instance.received_at < flagged_received_before),
        )
    )
    if only_when_delivered:
        query = query.where(~undelivered())
    return _candidates(session.execute(query.order_by(Instance.received_at).limit(limit)))


def oldest_studies(
    session: Session,
    *,
    received_before: datetime,
    only_when_delivered: bool,
    need_bytes: int,
    limit: int,
) -> list[Candidate]:
    """The deletable instances of the oldest studies (by their oldest deletable instance)
    whose deletable bytes add up to ``need_bytes`` (the watermark), at most ``limit``."""
    scope = [Instance.received_at < received_before]
    if only_when_delivered:
        scope.append(~undelivered())
    studies = (
        select(Series.study_id, func.min(Instance.received_at), func.sum(Instance.size_bytes))
        .join(Series, Instance.series_id == Series.id)
        .where(*scope)
        .group_by(Series.study_id)
        .order_by(func.min(Instance.received_at))
    )
    chosen: list[int] = []
    total = 0
    for study_id, _oldest, size in session.execute(studies):
        chosen.append(int(study_id))
        total += int(size or 0)
        if total >= need_bytes:
            break
    if not chosen:
        return []
    query = _joined().where(Series.study_id.in_(chosen), *scope)
    return _candidates(session.execute(query.order_by(Instance.received_at).limit(limit)))


def in_scope(session: Session, level: str, uid: str) -> list[Candidate]:
    """Every instance of a study, series or instance (``level``) by its UID."""
    column = {
        "study": Study.study_instance_uid,
        "series": Series.series_instance_uid,
        "instance": Instance.sop_instance_uid,
    }[level]
    return _candidates(session.execute(_joined().where(column == uid).order_by(Instance.id)))


def undelivered_count(session: Session, ids: Sequence[int]) -> int:
    """How many of the instances ``ids`` a destination has not confirmed yet."""
    total = 0
    for chunk in _chunks(list(ids)):
        total += int(
            session.scalar(
                select(func.count())
                .select_from(Instance)
                .where(Instance.id.in_(chunk), undelivered())
            )
            or 0
        )
    return total


def _chunks(ids: list[int], size: int = 500) -> Iterable[list[int]]:
    for start in range(0, len(ids), size):
        yield ids[start : start + size]


def delete_instances(
    session: Session,
    candidates: Sequence[Candidate],
    *,
    reason: str,
    actor: str,
    level: str,
    forced: bool = False,
    comment: str | None = None,
    only_delivered: bool = False,
) -> Deleted:
    """Remove ``candidates`` from the index and record the deletion, in the caller's write
    transaction (:func:`storage.db.write_session`); the files stay until
    :func:`finish_pending`.  A candidate whose row changed since it was selected (a resend
    re-indexed it) or is gone is left alone, and with ``only_delivered`` one a destination
    has not confirmed (the selection ran outside this transaction).  One ``deletions`` row
    per series."""
    if reason not in REASONS:
        raise ValueError(f"deletion reason {reason!r} (one of {', '.join(REASONS)})")
    conn = session.connection()
    wanted = {c.instance_id: c for c in candidates}
    kept: list[Candidate] = []
    for chunk in _chunks(list(wanted)):
        # PostgreSQL: the rows stay locked until commit, a concurrent resend waits for us
        query = select(Instance.id, Instance.received_at).where(Instance.id.in_(chunk))
        if only_delivered:
            query = query.where(~undelivered())
        rows = conn.execute(query.with_for_update())
        for instance_id, received_at in rows:
            c = wanted[int(instance_id)]
            if as_utc(received_at) == c.received_at:
                kept.append(c)
    if not kept:
        return Deleted([], 0, 0)
    now = datetime.now(UTC)
    by_series: dict[int, list[Candidate]] = defaultdict(list)
    for c in kept:
        by_series[c.series_id].append(c)
    ids: list[int] = []
    for series_id, items in by_series.items():
        first = items[0]
        deletion_id = conn.execute(
            insert(_DELETIONS)
            .values(
                deleted_at=now,
                level=level,
                study_instance_uid=first.study_instance_uid,
                series_instance_uid=first.series_instance_uid,
                sop_instance_uid=first.sop_instance_uid if level == "instance" else None,
                instances=len(items),
                bytes=sum(c.size_bytes for c in items),
                reason=reason,
                actor=actor[:128],
                forced=forced,
                comment=comment[:1024] if comment else None,
            )
            .returning(_DELETIONS.c.id)
        ).scalar_one()
        ids.append(int(deletion_id))
        conn.execute(
            insert(PendingUnlink),
            [
                {
                    "deletion_id": deletion_id,
                    "sop_instance_uid": c.sop_instance_uid,
                    "path": c.path,
                    "original_path": c.original_path,
                    "received_at": c.received_at,
                    "marked_at": now,
                }
                for c in items
            ],
        )
        for chunk in _chunks([c.instance_id for c in items]):
            conn.execute(delete(ForwardJob).where(ForwardJob.instance_id.in_(chunk)))
            conn.execute(delete(Instance).where(Instance.id.in_(chunk)))
        conn.execute(
            update(Series)
            .where(Series.id == series_id)
            .values(
                instance_count=Series.instance_count - len(items),
                corrected_instances=Series.corrected_instances
                - sum(c.original_path is not None for c in items),
                deleted_instances=Series.deleted_instances + len(items),
            )
        )
    _drop_empty(session, list(by_series))
    return Deleted(ids, len(kept), sum(c.size_bytes for c in kept))


def _drop_empty(session: Session, series_ids: list[int]) -> None:
    """Remove series left without instances, then studies left without series."""
    conn = session.connection()
    empty = [
        (int(sid), int(study))
        for sid, study in conn.execute(
            select(Series.id, Series.study_id).where(
                Series.id.in_(series_ids), ~exists().where(Instance.series_id == Series.id)
            )
        )
    ]
    if not empty:
        return
    conn.execute(delete(Series).where(Series.id.in_([s for s, _ in empty])))
    studies = {study for _, study in empty}
    conn.execute(
        delete(Study).where(Study.id.in_(studies), ~exists().where(Series.study_id == Study.id))
    )


@dataclass(frozen=True)
class Unlinked:
    """What :func:`finish_pending` did: files removed, bytes freed, files kept because a
    resend rewrote them (their journal record indexes them)."""

    files: int
    bytes: int
    kept: int


def finish_pending(
    sessions: sessionmaker[Session],
    store: FileStore,
    *,
    settle_s: float,
    deletion_ids: Sequence[int] | None = None,
    batch: int = 500,
) -> Unlinked:
    """Unlink the files of committed deletions (all, or those of ``deletion_ids``), then
    drop their ``pending_unlinks`` rows: recovery after a crash and the last step of every
    deletion.  Safe to run twice, or in two processes at once."""
    files = freed = kept = 0
    last_id = 0
    while True:
        with sessions() as session:
            query = select(PendingUnlink).where(PendingUnlink.id > last_id)
            if deletion_ids is not None:
                query = query.where(PendingUnlink.deletion_id.in_(list(deletion_ids)))
            rows = list(session.scalars(query.order_by(PendingUnlink.id).limit(batch)))
            if not rows:
                return Unlinked(files, freed, kept)
            indexed = set(
                session.scalars(
                    select(Instance.sop_instance_uid).where(
                        Instance.sop_instance_uid.in_([r.sop_instance_uid for r in rows])
                    )
                )
            )
        last_id = rows[-1].id
        folders: set[Path] = set()
        for row in rows:
            if row.sop_instance_uid in indexed:
                kept += 1  # a resend was indexed since: the file is its file
                continue
            target = store.path(row.path)
            if _rewritten(target, as_utc(row.received_at) or row.received_at, settle_s):
                kept += 1
                continue
            for path in (target, store.original_path(row.original_path or row.path)):
                size = _unlink(path)
                if size is not None:
                    folders.add(path.parent)
                    if path == target:
                        files += 1
                        freed += size
        for folder in folders:
            with contextlib.suppress(FileNotFoundError):
                fsync_dir(folder)
        _prune(store, folders)
        with write_session(sessions) as session:
            session.execute(delete(PendingUnlink).where(PendingUnlink.id.in_([r.id for r in rows])))


def _rewritten(path: Path, received_at: datetime, settle_s: float) -> bool:
    try:
        mtime = path.stat().st_mtime
    except FileNotFoundError:
        return False
    return mtime > received_at.timestamp() + max(settle_s, WRITE_MARGIN_S)


def _unlink(path: Path) -> int | None:
    """Remove ``path``; its size, ``None`` when it was not there."""
    try:
        size = path.stat().st_size
        path.unlink()
    except FileNotFoundError:
        return None
    return size


def _prune(store: FileStore, folders: Iterable[Path]) -> None:
    """Remove series and study folders left empty (a receive recreates them as needed)."""
    for folder in sorted(folders, key=lambda p: len(p.parts), reverse=True):
        for candidate in (folder, folder.parent):
            if candidate in (store.instances, store.originals) or candidate == store.root:
                break
            try:
                os.rmdir(candidate)
            except OSError:
                break  # not empty (or already gone)


def pending_count(session: Session) -> int:
    return int(session.scalar(select(func.count()).select_from(PendingUnlink)) or 0)


# -- the pass's lock ----------------------------------------------------------------------------

_LOCK_ID = 1


def try_lock(sessions: sessionmaker[Session], holder: str, lease_s: float) -> bool:
    """Take (or renew) the retention lock row for ``lease_s`` seconds: one node runs the
    pass at a time; a holder that died loses it when its lease ends."""
    now = datetime.now(UTC)
    with write_session(sessions) as session:
        conn = session.connection()
        if conn.scalar(select(RetentionLock.id).where(RetentionLock.id == _LOCK_ID)) is None:
            dialect_insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
            conn.execute(  # two nodes' first passes at once: one row
                dialect_insert(RetentionLock)
                .values(id=_LOCK_ID, holder=None, lease_until=None)
                .on_conflict_do_nothing(index_elements=["id"])
            )
        done = conn.execute(
            update(RetentionLock)
            .where(
                RetentionLock.id == _LOCK_ID,
                or_(
                    RetentionLock.holder.is_(None),
                    RetentionLock.holder == holder,
                    RetentionLock.lease_until < now,
                ),
            )
            .values(holder=holder, lease_until=now + timedelta(seconds=lease_s))
        )
        return bool(done.rowcount)


def unlock(sessions: sessionmaker[Session], holder: str) -> None:
    with write_session(sessions) as session:
        session.execute(
            update(RetentionLock)
            .where(RetentionLock.id == _LOCK_ID, RetentionLock.holder == holder)
            .values(holder=None, lease_until=None)
        )


# -- figures ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StoreFigures:
    """The index's view of the store (bytes of instance files; originals not counted)."""

    store_bytes: int
    deletable_bytes: int
    undelivered_bytes: int


def figures(session: Session, *, only_when_delivered: bool) -> StoreFigures:
    """Store size, bytes the watermark may delete now, bytes waiting for a destination."""
    total = int(session.scalar(select(func.coalesce(func.sum(Instance.size_bytes), 0))) or 0)
    waiting = int(
        session.scalar(select(func.coalesce(func.sum(Instance.size_bytes), 0)).where(undelivered()))
        or 0
    )
    return StoreFigures(total, total - waiting if only_when_delivered else total, waiting)


def deleted_by_reason(session: Session) -> dict[str, tuple[int, int]]:
    """Reason -> (instances, bytes) deleted so far."""
    rows = session.execute(
        select(Deletion.reason, func.sum(Deletion.instances), func.sum(Deletion.bytes)).group_by(
            Deletion.reason
        )
    )
    return {reason: (int(n or 0), int(b or 0)) for reason, n, b in rows}


def list_deletions(
    session: Session, *, limit: int = 100, before_id: int | None = None
) -> list[Deletion]:
    """Deletions, newest first (``before_id``: the page after the one that ended there)."""
    query = select(Deletion)
    if before_id is not None:
        query = query.where(Deletion.id < before_id)
    return list(session.scalars(query.order_by(Deletion.id.desc()).limit(limit)))
