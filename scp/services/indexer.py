"""The indexer: from the ingest journal into the index, beside the receive path.

The C-STORE handler (:mod:`scp.services.ingest`) stores the file durably and appends one
journal record (:mod:`storage.journal`); it answers Success without touching the index.
:class:`Indexer` reads every writer's journal from the position committed last, and indexes
the records in batches: one write transaction per batch (group commit: one fsync of the
database for up to ``batch_size`` instances, SQLite and PostgreSQL alike), with the series
geometry (:func:`scp.services.indexing.index_instance`), the forward jobs (``on_indexed``)
and the new journal positions.  A restart therefore indexes exactly what was acknowledged
and not yet indexed.

A batch that fails is retried one record per transaction; a record that still fails for a
reason other than the database being unavailable is logged and passed over (its file stays
in the store; ``spacing-scp reindex`` indexes it), so one bad record never stops the
others.  While the database is unavailable nothing is passed over: the indexer waits.
"""

from __future__ import annotations

import logging
import pickle
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from scp.metrics import METRICS
from scp.pipeline.model import PipelineResult
from scp.series import DEFAULT_TOLERANCE, Tolerance
from scp.services.indexing import InstanceEntry, SeriesStates, index_instance
from storage import journal
from storage.db import write_session
from storage.index import IndexedInstance

log = logging.getLogger("spacing_scp.indexer")


OnIndexed = Callable[[Session, IndexedInstance, InstanceEntry, PipelineResult], None]


@dataclass(frozen=True)
class JournalItem:
    """What the receive path journals for one instance: its index entry, the pipeline's
    result (routing reads it), and the wall-clock time of the Success (seconds)."""

    entry: InstanceEntry
    result: PipelineResult
    acked_at: float

    def encode(self) -> bytes:
        return pickle.dumps(self, protocol=pickle.HIGHEST_PROTOCOL)

    @staticmethod
    def decode(payload: bytes) -> JournalItem:
        item = pickle.loads(payload)  # the node's own journal, in its data directory
        if not isinstance(item, JournalItem):
            raise TypeError(f"journal record holds a {type(item).__name__}")
        return item


#: Seconds between looks at the journal while instances arrive (``poll_s`` when idle).
BUSY_POLL_S = 0.002


class Indexer:
    """Indexes the journal below ``directory`` into the index of ``sessions``."""

    def __init__(
        self,
        directory: Path,
        sessions: sessionmaker[Session],
        *,
        tolerance: Tolerance = DEFAULT_TOLERANCE,
        on_indexed: OnIndexed | None = None,
        owner: str | None = None,
        batch_size: int = 256,
        poll_s: float = 0.02,
    ) -> None:
        self.directory = directory
        self.sessions = sessions
        self.tolerance = tolerance
        self.on_indexed = on_indexed
        #: The writers read (:func:`storage.journal.owned`): this node's processes.
        self.owner = owner
        self.batch_size = batch_size
        self.poll_s = poll_s
        #: Series geometry states kept in memory between instances and batches.
        self.states = SeriesStates()
        self.indexed = 0
        self.failed = 0
        #: Committed journal positions, read once (``None``: read them again).
        self._positions: dict[str, int] | None = None

    # -- one batch -------------------------------------------------------------------------
    def run_once(self) -> int:
        """Index what the journal holds now (at most ``batch_size`` records); return the
        number of records consumed.  Raises the database's error when it is unavailable."""
        if self._positions is None:  # the indexer alone advances them: read them once
            with self.sessions() as session:
                self._positions = journal.committed(session.connection())
        positions = self._positions
        all_segments = journal.segments(self.directory, self.owner)
        batch: list[journal.Record] = []
        finished: set[str] = set()  # sealed segments read to their end
        for path in all_segments:
            start = positions.get(path.name, 0)
            try:
                size = path.stat().st_size
            except FileNotFoundError:
                continue
            if size <= start and not journal.sealed(path, all_segments):
                continue  # nothing new (the idle loop costs a listing and a stat)
            read = journal.read_segment(path, start, self.batch_size - len(batch))
            batch.extend(read.records)
            if read.complete and journal.sealed(path, all_segments):
                if read.trailing_bytes:
                    # a torn tail of a writer that stopped: never acknowledged (its
                    # fdatasync had not returned), so there is nothing in it to index
                    log.warning(
                        "journal %s: %d bytes at its end are not a whole record; skipped",
                        path.name,
                        read.trailing_bytes,
                    )
                finished.add(path.name)
            if len(batch) >= self.batch_size:
                break
        if batch:
            self._index(batch)
        self._drop(finished)
        return len(batch)

    def _index(self, batch: list[journal.Record]) -> None:
        try:
            self._commit(batch)
        except (OperationalError, DBAPIError) as exc:
            if _unavailable(exc):
                raise
            for record in batch:
                self._one(record)
        except Exception:
            log.warning("batch of %d failed; indexing its records one by one", len(batch))
            for record in batch:
                self._one(record)
        else:
            self.indexed += len(batch)

    def _one(self, record: journal.Record) -> None:
        try:
            self._commit([record])
            self.indexed += 1
        except (OperationalError, DBAPIError) as exc:
            if _unavailable(exc):
                raise
            self._pass_over(record, exc)
        except Exception as exc:
            self._pass_over(record, exc)

    def _pass_over(self, record: journal.Record, exc: Exception) -> None:
        self.failed += 1
        METRICS.inc("spacing_scp_index_failed_total")
        log.error(
            "journal %s record ending at %d not indexed (%s: %s); its file stays in the "
            "store: run `spacing-scp reindex` to index it",
            record.segment,
            record.end,
            type(exc).__name__,
            str(exc)[:300],
        )
        with write_session(self.sessions) as session:
            journal.advance(session.connection(), record.segment, record.end, None)
        if self._positions is not None:
            self._positions[record.segment] = record.end

    def _commit(self, batch: list[journal.Record]) -> None:
        ends: dict[str, int] = {}
        acked: list[float] = []
        with write_session(self.sessions) as session:
            for record in batch:
                item = JournalItem.decode(record.payload)
                instance, _resend = index_instance(session, item.entry, self.tolerance, self.states)
                if self.on_indexed is not None:
                    self.on_indexed(session, instance, item.entry, item.result)
                ends[record.segment] = record.end
                acked.append(item.acked_at)
            # the batch's oldest Success: the longest any of its instances waited
            lag_ms = max(0.0, (time.time() - min(acked)) * 1000) if acked else 0.0
            conn = session.connection()
            for segment, end in ends.items():
                journal.advance(conn, segment, end, lag_ms)
        if self._positions is not None:
            self._positions.update(ends)
        committed = time.time()
        for acked_at in acked:  # one observation per instance: its Success-to-indexed time
            METRICS.observe_ms(
                "spacing_scp_index_lag_seconds", max(0.0, committed - acked_at) * 1000
            )

    def _drop(self, names: set[str]) -> None:
        """Delete sealed segments that are fully indexed, then their rows."""
        if not names:
            return
        for name in names:
            (self.directory / name).unlink(missing_ok=True)
        with write_session(self.sessions) as session:
            journal.forget(session.connection(), names)
        if self._positions is not None:
            for name in names:
                self._positions.pop(name, None)

    # -- loops -----------------------------------------------------------------------------
    def catch_up(self) -> int:
        """Index everything the journal holds now (start-up recovery); return the count."""
        total = 0
        while True:
            count = self.run_once()
            total += count
            if count < self.batch_size:
                return total

    def run(self, stop: threading.Event) -> None:
        """Index until ``stop`` is set, then once more (what was acknowledged until then)."""
        while not stop.is_set():
            try:
                count = self.run_once()
            except Exception:
                log.exception("indexer: database unavailable; retrying in 1 s")
                self._positions = None
                stop.wait(1.0)
                continue
            if count == 0:
                stop.wait(self.poll_s)
            elif count < self.batch_size:
                # instances are arriving: look again soon (the lag is one look plus a batch)
                stop.wait(min(self.poll_s, BUSY_POLL_S))
        try:
            self.catch_up()
        except Exception:
            log.exception("indexer: final catch-up failed; the journal keeps the rest")


def _unavailable(exc: Exception) -> bool:
    """The database cannot be reached or is locked: wait, never pass a record over."""
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    text = str(getattr(exc, "orig", exc)).lower()
    return any(
        word in text
        for word in ("locked", "connection", "unable to open", "disk i/o", "server closed")
    )


class IndexerThread:
    """Runs an :class:`Indexer` on a thread (an in-process node; ``serve`` runs it in its
    own process, :mod:`scp.cli.serve`)."""

    def __init__(self, indexer: Indexer) -> None:
        self.indexer = indexer
        self._stop = threading.Event()
        self._thread = threading.Thread(target=indexer.run, args=(self._stop,), daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        self._thread.join(timeout)
