"""Retention (issue 20): what every destination holds can go, what it does not never does.

:class:`Retention` runs one *pass* (:meth:`Retention.run_once`): it finishes deletions a
crash interrupted (:func:`storage.retention.finish_pending`), takes the lock row nodes
sharing a database take in turn, then deletes by the age rules (``keep_days``,
``keep_flagged_days``) and by the watermark (``min_free_mb`` free on the data directory,
``max_store_mb`` of instance files: the oldest deletable studies first).  Each batch is
marked and committed, then its files are unlinked.  With ``only_when_delivered`` an
instance is deletable only when none of its forward jobs is pending, in flight or dead.
When the watermark cannot be met because only undelivered instances remain, the pass
says so (log, :attr:`Retention.blocked`, the web page) and deletes nothing more; once the
free space falls below ``[storage] min_free_mb`` C-STORE answers 0xA700 as before.

:meth:`Retention.delete` is a person's deletion of a study, series or instance (CLI, HTTP):
refused (:class:`Undelivered`) while a destination has not confirmed an instance of it,
unless forced; recorded with its reason and who asked.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from sqlalchemy.orm import Session, sessionmaker

from scp.config_tables import RetentionConfig
from storage import retention as r
from storage.db import write_session
from storage.filestore import FileStore
from storage.models import Deletion
from storage.outbox import iso
from storage.queries import BadQuery, NotFound

log = logging.getLogger("spacing_scp.retention")

MIB = 1024 * 1024
#: Seconds between two looks at the free space between passes (:class:`RetentionThread`).
FREE_SPACE_POLL_S = 1.0
Level = Literal["study", "series", "instance"]


class Undelivered(RuntimeError):
    """A person asked to delete instances a destination has not confirmed (not forced)."""

    def __init__(self, level: str, uid: str, count: int) -> None:
        super().__init__(
            f"{count} instance(s) of {level} {uid} are not yet confirmed by every destination "
            "(a forward job is pending, in flight or dead); force the deletion to delete them "
            "anyway"
        )
        self.count = count


@dataclass
class PassResult:
    """One pass: instances and bytes deleted, by reason; ``blocked``: why the watermark
    could not be met (``None`` when it was, or is off)."""

    instances: dict[str, int] = field(default_factory=dict)
    bytes: dict[str, int] = field(default_factory=dict)
    blocked: str | None = None
    ran: bool = True


@dataclass(frozen=True)
class ManualResult:
    """A person's deletion: what went, and the ``deletions`` rows recording it."""

    level: str
    uid: str
    instances: int
    bytes: int
    deletion_ids: list[int]
    forced: bool

    def as_dict(self) -> dict[str, Any]:
        """The :class:`scp.models.DeletionResult` fields."""
        return {
            "level": self.level,
            "uid": self.uid,
            "instances": self.instances,
            "bytes": self.bytes,
            "forced": self.forced,
            "deletion_ids": self.deletion_ids,
        }


class Retention:
    """The retention pass and manual deletions over one index and file store."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        store: FileStore,
        policy: RetentionConfig,
        *,
        holder: str | None = None,
        free_bytes: Callable[[], int] | None = None,
        floor_bytes: int = 0,
        settled: Callable[[], bool] | None = None,
    ) -> None:
        """``holder``: this node's name in the lock row; ``free_bytes``: free space on the
        data directory in bytes (the store's own by default; tests pass a figure);
        ``floor_bytes``: ``[storage] min_free_mb`` in bytes, where C-STORE is refused;
        ``settled``: waits until every instance acknowledged so far is indexed (read-your-
        writes, :meth:`scp.services.visibility.IndexVisibility.wait`), called between a
        deletion's commit and its unlinks, so that a resend of a deleted instance that was
        answered Success is indexed, and its file kept, before any file is unlinked."""
        self.settled = settled
        self.sessions = sessions
        self.store = store
        self.policy = policy
        self.holder = holder or f"{socket.gethostname()}:{os.getpid()}"
        self.free_bytes = free_bytes or store.free_bytes
        self.floor_bytes = floor_bytes
        #: Why the last pass could not meet the watermark (``None``: it could).
        self.blocked: str | None = None

    def status(self) -> StoreStatus:
        """The store's figures now (:func:`store_status`)."""
        with self.sessions() as session:
            return store_status(session, self.store, self.policy, self.floor_bytes)

    # -- the pass ----------------------------------------------------------------------------
    def _index_caught_up(self) -> bool:
        """Whether every instance acknowledged so far is indexed (``settled``, at most its
        wait): only then may files of deleted rows be unlinked, since a resend answered
        Success but not yet indexed has its file where the deleted row's was."""
        if self.settled is None or self.settled():
            return True
        log.info("retention: the index is behind the ingest journal; files are unlinked later")
        return False

    def recover(self) -> r.Unlinked:
        """Finish the deletions a crash left between commit and unlink (start-up, and the
        start of every pass); nothing while the index is behind the journal."""
        if not self._index_caught_up():
            return r.Unlinked(0, 0, 0)
        done = r.finish_pending(self.sessions, self.store, settle_s=self.policy.settle_s)
        if done.files or done.kept:
            log.info(
                "retention recovery: %d file(s) of committed deletions removed, %d kept "
                "(rewritten by a resend)",
                done.files,
                done.kept,
            )
        return done

    def run_once(self, now: datetime | None = None) -> PassResult:
        """One pass (see the module); only the node holding the lock row deletes."""
        self.recover()
        if not r.try_lock(
            self.sessions, self.holder, lease_s=max(60.0, 4 * self.policy.interval_s)
        ):
            return PassResult(ran=False)
        result = PassResult()
        try:
            now = now or datetime.now(UTC)
            self._by_age(now, result)
            self._by_watermark(now, result)
        finally:
            r.unlock(self.sessions, self.holder)
        if result.blocked and self.blocked is None:
            log.warning("retention: %s", result.blocked)
        elif self.blocked and result.blocked is None:
            log.info("retention: the store is back under its watermark")
        self.blocked = result.blocked
        return result

    def _settled(self, now: datetime, days: float) -> datetime:
        return min(now - timedelta(days=days), now - timedelta(seconds=self.policy.settle_s))

    def _by_age(self, now: datetime, result: PassResult) -> None:
        p = self.policy
        for reason, before, flagged_before in (
            ("keep_days", self._settled(now, p.keep_days), now - timedelta(days=36500)),
            (
                "keep_flagged_days",
                now - timedelta(days=36500),
                self._settled(now, p.keep_flagged_days),
            ),
        ):
            while True:
                with self.sessions() as session:  # selected outside the write lock
                    found = r.deletable(
                        session,
                        received_before=before,
                        flagged_received_before=flagged_before,
                        only_when_delivered=p.only_when_delivered,
                        limit=p.batch_size,
                    )
                deleted = self._delete(found, reason, "series")
                self._finish(deleted, reason, result)
                if len(found) < p.batch_size or not deleted.instances:
                    break

    def _need_bytes(self) -> int:
        """Bytes to delete to get back under the watermark (0: under it, or it is off)."""
        p = self.policy
        need = 0
        if p.min_free_mb:
            need = max(need, p.min_free_mb * MIB - self.free_bytes())
        if p.max_store_mb:
            with self.sessions() as session:
                size = r.figures(session, only_when_delivered=p.only_when_delivered).store_bytes
            need = max(need, size - p.max_store_mb * MIB)
        return need

    def _by_watermark(self, now: datetime, result: PassResult) -> None:
        p = self.policy
        need = self._need_bytes()
        while need > 0:
            with self.sessions() as session:
                found = r.oldest_studies(
                    session,
                    received_before=self._settled(now, 0),
                    only_when_delivered=p.only_when_delivered,
                    need_bytes=need,
                    limit=p.batch_size,
                )
            deleted = self._delete(found, "watermark", "study")
            self._finish(deleted, "watermark", result)
            if not deleted.instances:
                result.blocked = self._why_blocked(need)
                return
            need = self._need_bytes()

    def _delete(self, found: list[r.Candidate], reason: str, level: str) -> r.Deleted:
        """Delete what a selection found, re-checked under the write lock (a row a resend
        replaced, or an instance queued again for a destination meanwhile, stays)."""
        if not found:
            return r.Deleted([], 0, 0)
        with write_session(self.sessions) as session:
            return r.delete_instances(
                session,
                found,
                reason=reason,
                actor="policy",
                level=level,
                only_delivered=self.policy.only_when_delivered,
            )

    def _why_blocked(self, need: int) -> str:
        with self.sessions() as session:
            figures = r.figures(session, only_when_delivered=self.policy.only_when_delivered)
        text = (
            f"store over its retention watermark by {need // MIB} MiB and nothing more may be "
            f"deleted: {figures.undelivered_bytes // MIB} MiB wait for a destination to "
            "confirm them (forward jobs pending, in flight or dead)"
        )
        return text

    def _finish(self, deleted: r.Deleted, reason: str, result: PassResult) -> None:
        if not deleted.instances:
            return
        self._unlink(deleted)
        result.instances[reason] = result.instances.get(reason, 0) + deleted.instances
        result.bytes[reason] = result.bytes.get(reason, 0) + deleted.bytes
        log.info(
            "retention (%s): deleted %d instance(s), %d bytes",
            reason,
            deleted.instances,
            deleted.bytes,
        )

    def _unlink(self, deleted: r.Deleted) -> None:
        """The files of a committed deletion, once what was acknowledged is indexed (else
        they stay in ``pending_unlinks`` for the next pass)."""
        if not self._index_caught_up():
            return
        r.finish_pending(
            self.sessions,
            self.store,
            settle_s=self.policy.settle_s,
            deletion_ids=deleted.deletion_ids,
        )

    # -- by hand ------------------------------------------------------------------------------
    def delete(
        self,
        level: Level,
        uid: str,
        *,
        actor: str,
        force: bool = False,
        reason: str | None = None,
    ) -> ManualResult:
        """Delete a study, series or instance by its UID.  Raises
        :class:`storage.queries.NotFound` (nothing indexed under ``uid``) and
        :class:`Undelivered` (an instance waits for a destination and ``force`` is off)."""
        with write_session(self.sessions) as session:
            found = r.in_scope(session, level, uid)
            if not found:
                raise NotFound(f"no {level} {uid} in the index")
            waiting = r.undelivered_count(session, [c.instance_id for c in found])
            if waiting and not force:
                raise Undelivered(level, uid, waiting)
            deleted = r.delete_instances(
                session,
                found,
                reason="manual",
                actor=actor,
                level=level,
                forced=bool(waiting),
                comment=reason,
            )
        self._unlink(deleted)
        log.warning(
            "%s deleted %s %s: %d instance(s), %d bytes%s%s",
            actor,
            level,
            uid,
            deleted.instances,
            deleted.bytes,
            f", {waiting} undelivered (forced)" if waiting else "",
            f" ({reason})" if reason else "",
        )
        return ManualResult(
            level, uid, deleted.instances, deleted.bytes, deleted.deletion_ids, bool(waiting)
        )


@dataclass(frozen=True)
class StoreStatus:
    """The store as the overview and ``/metrics`` show it (bytes): ``refusing`` says why
    C-STORE answers 0xA700 now (``None``: it does not)."""

    store_bytes: int
    free_bytes: int
    deletable_bytes: int
    undelivered_bytes: int
    refusing: str | None
    deleted: dict[str, tuple[int, int]]


def store_status(
    session: Session, store: FileStore, policy: RetentionConfig, floor_bytes: int
) -> StoreStatus:
    """Store size, free space, deletable and undelivered bytes, deletions by reason, and
    why the node refuses images (free space below ``[storage] min_free_mb``)."""
    figures = r.figures(session, only_when_delivered=policy.only_when_delivered)
    free = store.free_bytes()
    refusing = None
    if floor_bytes and free < floor_bytes:
        refusing = (
            f"free space {free // MIB} MiB is below [storage] min_free_mb "
            f"({floor_bytes // MIB} MiB): C-STORE answers 0xA700; "
            + (
                f"{figures.undelivered_bytes // MIB} MiB wait for a destination to confirm "
                "them and may not be deleted"
                if policy.enabled
                else "retention is off ([retention] enabled = false)"
            )
        )
    return StoreStatus(
        figures.store_bytes,
        free,
        figures.deletable_bytes if policy.enabled else 0,
        figures.undelivered_bytes,
        refusing,
        r.deleted_by_reason(session),
    )


def store_gauges(status: StoreStatus) -> dict[str, float]:
    """The retention gauges of ``/metrics`` (bytes; deletions by reason, all nodes)."""
    out = {
        "spacing_scp_store_bytes": float(status.store_bytes),
        "spacing_scp_store_free_bytes": float(status.free_bytes),
        "spacing_scp_store_deletable_bytes": float(status.deletable_bytes),
        "spacing_scp_store_undelivered_bytes": float(status.undelivered_bytes),
        "spacing_scp_store_refusing": 1.0 if status.refusing else 0.0,
    }
    for reason in r.REASONS:
        count, size = status.deleted.get(reason, (0, 0))
        out[f'spacing_scp_deleted_instances{{reason="{reason}"}}'] = float(count)
        out[f'spacing_scp_deleted_bytes{{reason="{reason}"}}'] = float(size)
    return out


def deletion_dict(row: Deletion) -> dict[str, Any]:
    """A ``deletions`` row as :class:`scp.models.Deletion` fields."""
    return {
        "id": row.id,
        "deleted_at": iso(row.deleted_at),
        "level": row.level,
        "study_instance_uid": row.study_instance_uid,
        "series_instance_uid": row.series_instance_uid,
        "sop_instance_uid": row.sop_instance_uid,
        "instances": row.instances,
        "bytes": row.bytes,
        "reason": row.reason,
        "actor": row.actor,
        "forced": bool(row.forced),
        "comment": row.comment,
    }


def deletions_page(
    session: Session, limit: int, cursor: str | None = None
) -> tuple[list[dict[str, Any]], str | None]:
    """One page of deletions, newest first, and the cursor of the next (``None``: last);
    :class:`storage.queries.BadQuery` for a cursor this node did not issue."""
    before = None
    if cursor is not None:
        if not cursor.isascii() or not cursor.isdigit():
            raise BadQuery(f"cursor {cursor!r} was not issued by this API")
        before = int(cursor)
    rows = r.list_deletions(session, limit=limit + 1, before_id=before)
    items = [deletion_dict(row) for row in rows[:limit]]
    return items, str(rows[limit - 1].id) if len(rows) > limit else None


class RetentionThread:
    """Runs :meth:`Retention.run_once` every ``interval_s`` on a thread (in the process
    that forwards: the indexer process, or the first process with ``indexer = "inline"``).

    Between passes it looks at the free space every :data:`FREE_SPACE_POLL_S` seconds (one
    ``statvfs``) and runs the next pass at once when it fell below the watermark, whichever
    process received the bytes; a receive in this process wakes it too (:meth:`wake`).
    While the last pass could not meet the watermark (only unconfirmed instances left)
    only the interval counts: nothing would be deleted sooner."""

    def __init__(self, retention: Retention) -> None:
        self.retention = retention
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name="retention", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        """Run a pass now (a receive crossed the watermark)."""
        if self.retention.blocked is None:
            self._wake.set()

    def _pause(self) -> None:
        """Until the next pass is due, woken, or the free space is below the watermark."""
        policy = self.retention.policy
        deadline = time.monotonic() + policy.interval_s
        while not self._stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0 or self._wake.wait(min(left, FREE_SPACE_POLL_S)):
                break
            if (
                policy.min_free_mb
                and self.retention.blocked is None
                and self.retention.free_bytes() < policy.min_free_mb * MIB
            ):
                break
        self._wake.clear()

    def _run(self) -> None:
        try:
            self.retention.recover()
        except Exception:
            log.exception("retention recovery failed; the next pass retries")
        while not self._stop.is_set():
            try:
                self.retention.run_once()
            except Exception:
                log.exception(
                    "retention pass failed; retrying in %.0f s", self.retention.policy.interval_s
                )
            self._pause()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout)
