"""The ingest journal: a durable mark, per acknowledged instance, that it is still to be
indexed.

Each receiving process appends one record per stored instance to its own segment file,
``<journal>/<writer>.<sequence>.jnl``, and ``fdatasync``\\ s it before the C-STORE response
(PS3.4 B.2.3: Success means the instance is kept).  A record is a little-endian header
(payload length, CRC-32 of the payload; 8 bytes) and an opaque payload.  The indexer reads
the segments from the position it committed last (table ``ingest_journal``, written in the
same transaction as the index rows of the records it covers), so a restart after SIGKILL or
a power cut indexes exactly the records that were not yet indexed, never one twice.

A writer never reopens an old segment: each start (and each ``segment_bytes``) begins a
new one, so a segment with a newer sibling of the same writer is *sealed*.  A sealed segment
that was read to its end is deleted: the journal holds at most the records not yet indexed
plus one open segment per writer (bounded; recovery reads the journal, never walks the
store).
"""

from __future__ import annotations

import contextlib
import os
import struct
import threading
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import cast

from sqlalchemy import Connection, Table, delete, insert, select, update

from storage.filestore import fsync_dir
from storage.models import IngestJournal

SUFFIX = ".jnl"
_HEADER = struct.Struct("<II")
#: A record larger than this is corruption, not a record (an index entry is a few KiB).
MAX_RECORD_BYTES = 64 * 1024 * 1024
#: A writer starts a new segment once its current one has grown past this many bytes.
SEGMENT_BYTES = 8 * 1024 * 1024

_TABLE = cast(Table, IngestJournal.__table__)


class JournalError(RuntimeError):
    """A journal segment cannot be written or read (the message names the file)."""


def _split(name: str) -> tuple[str, int] | None:
    """``writer.00000012.jnl`` -> ``("writer", 12)``; ``None`` for any other name."""
    if not name.endswith(SUFFIX):
        return None
    writer, _, seq = name[: -len(SUFFIX)].rpartition(".")
    if not writer or not seq.isdigit():
        return None
    return writer, int(seq)


def owned(writer: str, owner: str | None) -> bool:
    """Whether ``writer`` is one of ``owner``'s processes (``owner`` or ``owner-N``; every
    writer when ``owner`` is ``None``): nodes sharing a store each index their own."""
    return owner is None or writer == owner or writer.startswith(owner + "-")


def segments(directory: Path, owner: str | None = None) -> list[Path]:
    """The journal's segment files of ``owner``'s writers, oldest first per writer."""
    found = []
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(directory):
            parts = _split(entry.name)
            if parts is not None and owned(parts[0], owner):
                found.append((parts, Path(entry.path)))
    return [path for _, path in sorted(found)]


def sealed(path: Path, all_segments: Iterable[Path]) -> bool:
    """Whether a newer segment of the same writer exists (``path`` gets no more records)."""
    mine = _split(path.name)
    if mine is None:
        return True
    for other in all_segments:
        theirs = _split(other.name)
        if theirs is not None and theirs[0] == mine[0] and theirs[1] > mine[1]:
            return True
    return False


def end_positions(directory: Path, owner: str | None = None) -> dict[str, int]:
    """Each segment's current size in bytes: everything acknowledged so far lies below."""
    out = {}
    for path in segments(directory, owner):
        with contextlib.suppress(FileNotFoundError):
            out[path.name] = path.stat().st_size
    return out


class JournalWriter:
    """One receiving process's journal: appends records durably, thread-safe."""

    def __init__(self, directory: Path, writer: str, segment_bytes: int = SEGMENT_BYTES) -> None:
        """``writer``: this process's name (unique among the processes sharing the store)."""
        if "/" in writer or not writer:
            raise ValueError(f"journal writer name {writer!r}")
        self.directory = directory
        self.writer = writer
        self.segment_bytes = segment_bytes
        directory.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        last = [
            parts[1]
            for p in segments(directory)
            if (parts := _split(p.name)) is not None and parts[0] == writer
        ]
        self._seq = max(last, default=0)
        self._fd = -1
        self._size = 0
        self.segment = ""
        self._open_next()

    def _open_next(self) -> None:
        self._seq += 1
        self.segment = f"{self.writer}.{self._seq:08d}{SUFFIX}"
        path = self.directory / self.segment
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        fsync_dir(self.directory)
        if self._fd >= 0:
            os.close(self._fd)
        self._fd, self._size = fd, 0

    def append(self, payload: bytes) -> tuple[str, int]:
        """Write one record and ``fdatasync`` it; return its segment and end position.

        Raises :class:`JournalError` (disk full, I/O error): the record is then not
        durable and the caller must not answer Success.
        """
        record = _HEADER.pack(len(payload), zlib.crc32(payload)) + payload
        with self._lock:
            try:
                if self._size >= self.segment_bytes:
                    self._open_next()
                view = memoryview(record)
                while view:
                    written = os.write(self._fd, view)
                    view = view[written:]
                os.fdatasync(self._fd)
            except OSError as exc:
                raise JournalError(f"journal {self.segment}: {exc}") from exc
            self._size += len(record)
            return self.segment, self._size

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1


@dataclass(frozen=True)
class Record:
    """One journal record: its segment, the position just after it, its payload."""

    segment: str
    end: int
    payload: bytes


@dataclass(frozen=True)
class SegmentRead:
    """What :func:`read_segment` found: whole records; ``complete`` when the read stopped
    at the end of the file rather than at ``limit``, and then ``trailing_bytes`` that do not
    make a whole record (a record being written, or a torn or ``corrupt`` tail)."""

    records: list[Record]
    complete: bool
    trailing_bytes: int
    corrupt: bool


def read_segment(path: Path, start: int, limit: int) -> SegmentRead:
    """Up to ``limit`` whole records of ``path`` from byte ``start``."""
    records: list[Record] = []
    try:
        with open(path, "rb") as fh:
            fh.seek(start)
            data = fh.read()
    except FileNotFoundError:
        return SegmentRead([], True, 0, False)
    offset = 0
    corrupt = False
    while len(records) < limit and len(data) - offset >= _HEADER.size:
        length, crc = _HEADER.unpack_from(data, offset)
        if length > MAX_RECORD_BYTES:
            corrupt = True
            break
        body_end = offset + _HEADER.size + length
        if body_end > len(data):
            break
        payload = bytes(data[offset + _HEADER.size : body_end])
        if zlib.crc32(payload) != crc:
            corrupt = True
            break
        offset = body_end
        records.append(Record(path.name, start + offset, payload))
    complete = len(records) < limit or offset == len(data)
    return SegmentRead(records, complete, len(data) - offset if complete else 0, corrupt)


# -- the indexer's positions (table ingest_journal) ---------------------------------------------


def committed(conn: Connection) -> dict[str, int]:
    """Each segment's committed position (bytes of it that are indexed)."""
    rows = conn.execute(select(_TABLE.c.segment, _TABLE.c.position))
    return {segment: int(position) for segment, position in rows}


def advance(conn: Connection, segment: str, position: int, lag_ms: float | None) -> None:
    """Record (in the caller's transaction) that ``segment`` is indexed up to ``position``."""
    now = datetime.now(UTC)
    values = {"position": position, "lag_ms": lag_ms, "updated_at": now}
    done = conn.execute(update(_TABLE).where(_TABLE.c.segment == segment).values(**values))
    if not done.rowcount:
        conn.execute(insert(_TABLE).values(segment=segment, **values))


def forget(conn: Connection, segments_gone: Iterable[str]) -> None:
    """Drop the rows of deleted segments."""
    names = list(segments_gone)
    if names:
        conn.execute(delete(_TABLE).where(_TABLE.c.segment.in_(names)))


def last_lag_ms(conn: Connection) -> float:
    """The largest Success-to-indexed time of the segments' last batches (ms), 0 if none."""
    value = conn.execute(select(_TABLE.c.lag_ms).order_by(_TABLE.c.updated_at.desc()).limit(1))
    lag = value.scalar()
    return float(lag or 0.0)


def pending_bytes(directory: Path, positions: dict[str, int], owner: str | None = None) -> int:
    """Journal bytes acknowledged but not yet indexed."""
    ends = end_positions(directory, owner)
    return sum(max(0, size - positions.get(name, 0)) for name, size in ends.items())
