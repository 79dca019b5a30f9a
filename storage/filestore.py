"""The durable file store: ``<study>/<series>/<sop>.dcm`` under the data directory.

Every file is written to a temporary file on the same filesystem, fsynced,
renamed into place, and its folder fsynced (so the rename itself is durable).
A file that replaces an earlier copy (a resend of the same SOP Instance UID)
first gives that copy a second name (a hard link) in the process's own ``tmp/`` folder,
its name saying where it belongs, so that a failed commit can put it back: nothing already
accepted is ever lost, the file's path never goes missing while it is replaced (a forward
job may be sending it), and start-up recovery reads one small folder, never the whole
store.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import threading
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from storage.uids import instance_relpath

_BACKUP_SUFFIX = ".prev"
#: Tries to place a file whose folder a concurrent deletion removed (``_write_durable``).
_FOLDER_ATTEMPTS = 5
_LOCK_STRIPES = 256
#: Longest wait, in seconds, for the lock of one SOP Instance UID (a store of the same
#: instance by another association holds it: writing the file and indexing it).
LOCK_TIMEOUT_S = 120.0


class StoreBusy(TimeoutError):
    """The lock of a SOP Instance UID stayed held longer than :data:`LOCK_TIMEOUT_S`."""


@dataclass
class PendingFile:
    """A file renamed into place whose index entry is not yet committed."""

    path: Path
    relpath: Path
    size: int
    backup: Path | None
    original_relpath: Path | None = None
    original_backup: Path | None = None
    #: Keep the original already stored for this instance although this file has none
    #: of its own (a resend of the node's own corrected output: the original still
    #: describes it).
    keep_original: bool = False


def fsync_dir(path: Path) -> None:
    """Make a folder's entries (a create or rename in it) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FileStore:
    """Durable storage of instance files below ``root``.

    Layout: ``instances/`` (what the node vouches for), ``originals/`` (the bytes as
    received, kept whenever the node changed an instance), ``tmp/<node>/`` (receive
    area of one node; emptied at its start-up).
    """

    def __init__(self, root: Path, tmp_name: str = "") -> None:
        self.root = root
        self.instances = root / "instances"
        self.originals = root / "originals"
        # Several nodes may share one store (issue 8): each receives into its own tmp/
        # folder, so one node's start-up recovery never removes another's transfers.
        self.tmp = root / "tmp" / tmp_name if tmp_name else root / "tmp"
        for d in (self.root, self.instances, self.originals, self.tmp):
            d.mkdir(parents=True, exist_ok=True)
        self._locks = [threading.Lock() for _ in range(_LOCK_STRIPES)]
        self.lock_timeout_s = LOCK_TIMEOUT_S

    # -- locking -------------------------------------------------------------------------
    @contextlib.contextmanager
    def locked(self, sop_instance_uid: str) -> Iterator[None]:
        """Serialize work on one SOP Instance UID within this process; :class:`StoreBusy`
        after :data:`LOCK_TIMEOUT_S` seconds of waiting."""
        lock = self._locks[zlib.crc32(sop_instance_uid.encode()) % _LOCK_STRIPES]
        if not lock.acquire(timeout=self.lock_timeout_s):
            raise StoreBusy(
                f"another store of {sop_instance_uid} (or of one sharing its lock) has held "
                f"the lock for over {self.lock_timeout_s:g} s"
            )
        try:
            yield
        finally:
            lock.release()

    # -- paths ---------------------------------------------------------------------------
    def relpath(self, study_uid: str, series_uid: str, sop_uid: str) -> Path:
        return instance_relpath(study_uid, series_uid, sop_uid)

    def path(self, relpath: Path | str) -> Path:
        return self.instances / relpath

    def original_path(self, relpath: Path | str) -> Path:
        return self.originals / relpath

    def free_bytes(self) -> int:
        return shutil.disk_usage(self.root).free

    # -- writing -------------------------------------------------------------------------
    def _ensure_dir(self, directory: Path, base: Path) -> None:
        if directory.is_dir():
            return
        parent = directory.parent
        if parent != base:
            self._ensure_dir(parent, base)
        with contextlib.suppress(FileExistsError):
            directory.mkdir()
        fsync_dir(parent)

    def _written(self, write: Callable[[BinaryIO], None]) -> Path:
        """A new file in ``tmp/`` holding what ``write`` wrote, fsynced."""
        fd, tmp_name = tempfile.mkstemp(dir=self.tmp, suffix=".part")
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as fh:
                write(fh)
                fh.flush()
                os.fsync(fh.fileno())
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            raise
        return tmp

    def _place(self, tmp: Path, target: Path, base: Path) -> Path | None:
        """Rename the durable file ``tmp`` (in ``tmp/``) to ``target`` and make the rename
        durable; return the path of the moved-aside previous copy.  ``tmp`` is removed if
        it cannot be placed.

        Retention (:mod:`storage.retention`) removes series and study folders it emptied;
        a folder removed between its creation here and the rename is created again."""
        try:
            for attempt in range(_FOLDER_ATTEMPTS):
                self._ensure_dir(target.parent, base)
                try:
                    backup = self._move_aside(target)
                    os.replace(tmp, target)
                except FileNotFoundError:
                    if attempt == _FOLDER_ATTEMPTS - 1 or not tmp.exists():
                        raise
                    continue  # the folder went meanwhile
                fsync_dir(target.parent)
                return backup
            raise AssertionError("unreachable")
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            raise

    def _write_durable(
        self, target: Path, base: Path, write: Callable[[BinaryIO], None]
    ) -> Path | None:
        """Write ``target`` durably; return the path of the moved-aside previous copy."""
        return self._place(self._written(write), target, base)

    def _move_aside(self, target: Path) -> Path | None:
        """Give an existing ``target`` a second name in tmp/ (the new file then replaces
        the first in one rename: the path never goes missing for a reader); ``None`` when
        there is no previous copy (or it was deleted meanwhile)."""
        if not target.exists():
            return None
        backup = self._backup_name(target)
        with contextlib.suppress(FileNotFoundError):
            backup.unlink()
        try:
            os.link(target, backup)
        except FileNotFoundError:
            if target.parent.is_dir():
                return None  # deleted meanwhile: nothing to keep
            raise
        fsync_dir(self.tmp)
        return backup

    def _backup_name(self, target: Path) -> Path:
        """``tmp/<instances|originals>#<study>#<series>#<sop>.dcm.prev`` (UIDs hold no ``#``)."""
        for base in (self.instances, self.originals):
            if target.is_relative_to(base):
                parts = (base.name, *target.relative_to(base).parts)
                return self.tmp / ("#".join(parts) + _BACKUP_SUFFIX)
        raise ValueError(f"{target} is outside the store")

    def _backup_target(self, backup: Path) -> Path | None:
        parts = backup.name[: -len(_BACKUP_SUFFIX)].split("#")
        bases = {self.instances.name: self.instances, self.originals.name: self.originals}
        if len(parts) < 2 or parts[0] not in bases or any(p in ("", ".", "..") for p in parts):
            return None
        return bases[parts[0]].joinpath(*parts[1:])

    def put(
        self,
        relpath: Path,
        write: Callable[[BinaryIO], None],
        original: Callable[[BinaryIO], None] | None = None,
    ) -> PendingFile:
        """Durably place a file (and optionally its original bytes); commit or roll back."""
        original_backup: Path | None = None
        original_relpath: Path | None = None
        if original is not None:
            original_relpath = relpath
            original_backup = self._write_durable(
                self.original_path(relpath), self.originals, original
            )
        try:
            target = self.path(relpath)
            backup = self._write_durable(target, self.instances, write)
        except BaseException:
            if original_relpath is not None:
                self._undo(self.original_path(original_relpath), original_backup)
            raise
        return PendingFile(
            target, relpath, target.stat().st_size, backup, original_relpath, original_backup
        )

    def put_received(
        self,
        relpath: Path,
        received: Path,
        edited: Callable[[BinaryIO], None] | None = None,
    ) -> PendingFile:
        """Durably place a file that was received into this store's ``tmp/`` folder with
        its final bytes (File Meta Information and data set as stored): it is fsynced and
        renamed into place, never copied.

        Without ``edited`` the received file becomes the instance.  With it, ``edited``
        writes the changed instance first (it may read ``received``), then the received
        file becomes the original (``originals/``) and the changed one the instance.
        Commit or roll back as for :meth:`put`.  Raises ``ValueError`` if ``received`` is
        not directly in ``tmp/`` (a rename could cross filesystems), ``OSError`` as the
        disk does.
        """
        if received.parent != self.tmp:
            raise ValueError(f"{received} is not in the store's tmp/ folder")
        fd = os.open(received, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        target = self.path(relpath)
        if edited is None:
            backup = self._place(received, target, self.instances)
            return PendingFile(target, relpath, target.stat().st_size, backup)
        changed = self._written(edited)
        try:
            original_backup = self._place(received, self.original_path(relpath), self.originals)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                changed.unlink()
            raise
        try:
            backup = self._place(changed, target, self.instances)
        except BaseException:
            self._undo(self.original_path(relpath), original_backup)
            raise
        return PendingFile(target, relpath, target.stat().st_size, backup, relpath, original_backup)

    def commit(self, pending: PendingFile) -> None:
        """The index committed: drop the moved-aside copies."""
        for backup in (pending.backup, pending.original_backup):
            if backup is not None:
                with contextlib.suppress(FileNotFoundError):
                    backup.unlink()
        if pending.original_relpath is None and not pending.keep_original:
            # An earlier copy of this instance may have been changed; its original no longer
            # describes what is stored.
            with contextlib.suppress(FileNotFoundError):
                self.original_path(pending.relpath).unlink()

    def rollback(self, pending: PendingFile) -> None:
        """The index failed: remove the new file and put any previous copy back."""
        self._undo(pending.path, pending.backup)
        if pending.original_relpath is not None:
            self._undo(self.original_path(pending.original_relpath), pending.original_backup)

    def _undo(self, target: Path, backup: Path | None) -> None:
        if backup is not None:
            os.replace(backup, target)
        else:
            with contextlib.suppress(FileNotFoundError):
                target.unlink()
        fsync_dir(target.parent)

    # -- start-up ------------------------------------------------------------------------
    def recover(self) -> list[str]:
        """Remove this process's temporary files and settle copies a crash left moved aside.

        Only ``tmp/<this process>/`` is read (bounded by the transfers running at the
        crash).  A moved-aside copy whose file is missing is put back (the crash hit
        between the two renames); one whose file exists is dropped: the newer file was
        written and synced completely before its rename.
        """
        actions: list[str] = []
        for entry in self.tmp.iterdir():
            if not entry.is_file():
                continue
            target = self._backup_target(entry) if entry.name.endswith(_BACKUP_SUFFIX) else None
            if target is None:
                entry.unlink()
                actions.append(f"removed temporary file {entry.name}")
            elif target.exists():
                entry.unlink()
                actions.append(f"dropped superseded copy of {target.relative_to(self.root)}")
            else:
                self._ensure_dir(target.parent, self.root)
                os.replace(entry, target)
                fsync_dir(target.parent)
                actions.append(f"restored {target.relative_to(self.root)}")
        return actions
