"""Read-your-writes over the ingest journal: a reader waits until every instance that was
acknowledged before its request is indexed.

The C-STORE handler answers once the instance's journal record is durable
(:mod:`storage.journal`); the indexer makes it visible shortly after.  A reader (C-FIND,
the HTTP API) first takes the journal's end positions (a directory listing and a ``stat``
per segment: everything acknowledged so far lies below them) and waits until the index's
committed positions reach them, at most ``timeout_s`` (2 s); then it answers with what is
indexed, and the caller adds a warning.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from scp.metrics import METRICS
from storage import journal

log = logging.getLogger("spacing_scp.visibility")


#: Longest wait of a reader for the indexer (seconds).
WAIT_S = 2.0


class IndexVisibility:
    """Waits for the indexer to reach the journal's current end (``owner``: the writers
    this node's indexer reads, see :func:`storage.journal.segments`)."""

    def __init__(
        self,
        directory: Path,
        sessions: sessionmaker[Session],
        *,
        owner: str | None = None,
        timeout_s: float = WAIT_S,
        poll_s: float = 0.002,
    ) -> None:
        self.directory = directory
        self.sessions = sessions
        self.owner = owner
        self.timeout_s = timeout_s
        self.poll_s = poll_s

    def behind(self, ends: dict[str, int]) -> dict[str, int]:
        """Of ``ends`` (segment -> size), the segments the index has not reached yet."""
        with self.sessions() as session:
            positions = journal.committed(session.connection())
        present = journal.end_positions(self.directory, self.owner)
        return {
            name: size
            for name, size in ends.items()
            if name in present and positions.get(name, 0) < size
        }

    def wait(self) -> bool:
        """Block until what was acknowledged before this call is indexed; ``False`` when
        ``timeout_s`` passed first (the caller answers with a warning)."""
        started = time.monotonic()
        ends = journal.end_positions(self.directory, self.owner)
        while ends:
            ends = self.behind(ends)
            if not ends:
                break
            if time.monotonic() - started >= self.timeout_s:
                METRICS.inc("spacing_scp_read_stale_total")
                log.warning(
                    "index is %d journal bytes behind after %.1f s; answering with what is indexed",
                    sum(ends.values()),
                    self.timeout_s,
                )
                return False
            time.sleep(self.poll_s)
        METRICS.observe_ms("spacing_scp_read_wait_seconds", (time.monotonic() - started) * 1000)
        return True

    def gauges(self) -> dict[str, float]:
        """``/metrics`` values: the last batch's Success-to-indexed time and the journal
        bytes acknowledged but not yet indexed."""
        with self.sessions() as session:
            conn = session.connection()
            positions = journal.committed(conn)
            lag_ms = journal.last_lag_ms(conn)
        return {
            "spacing_scp_index_lag_last_seconds": lag_ms / 1000.0,
            "spacing_scp_index_pending_bytes": float(
                journal.pending_bytes(self.directory, positions, self.owner)
            ),
        }
