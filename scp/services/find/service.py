"""The C-FIND SCP over the index: :class:`FindService` (PS3.4 C.4.1.3).

It parses the request identifier (:mod:`.identifier`), runs the statement
(:mod:`.sql`) in keyset batches, each read in its own short session (no transaction stays
open while responses travel), computes the values no column holds (:mod:`.hits`) and
yields one pending response per match (:mod:`.answer`), then the final status:

* 0xFF00 Pending, or 0xFF01 when the request holds keys the node does not support
  (PS3.4 C.4.1.1.4);
* 0xFE00 Cancel when the peer sent C-CANCEL-FIND-RQ (PS3.7 9.3.2.3);
* 0xA700 Refused: Out of Resources beyond ``[query] max_results`` matches;
* 0xA900 Identifier Does Not Match SOP Class for an identifier it refuses;
* 0xC000 Unable to Process for an identifier that cannot be decoded or an internal error;
* Success (0x0000) is sent by the network layer when the generator ends.

No network code: :meth:`FindService.handle` reads only the ``assoc``, ``identifier`` and
``is_cancelled`` attributes of the C-FIND event the network layer passes in.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from pydicom.dataset import Dataset
from sqlalchemy import Select
from sqlalchemy.orm import Session, sessionmaker

from scp import status
from scp.metrics import METRICS
from scp.services.find.answer import response_identifier
from scp.services.find.errors import FindError
from scp.services.find.hits import Hit, SeriesSummaries, compute
from scp.services.find.identifier import FindRequest, parse_identifier
from scp.services.find.keys import Model
from scp.services.find.sql import statement as build_statement

log = logging.getLogger("spacing_scp.find")

#: Matches read per database round trip.
BATCH_SIZE = 200

#: One C-FIND response: (status code or status dataset, identifier or ``None``).
FindResponse = tuple[int | Dataset, Dataset | None]


@dataclass(frozen=True)
class CFindRequest:
    """A C-FIND-RQ as the network layer received it (PS3.7 9.1.2.1)."""

    #: The requester's AE title (PS3.8 9.3.2), padding stripped.
    calling_ae_title: str
    #: Decodes the request's Identifier; raises when its bytes cannot be decoded.
    identifier: Callable[[], Dataset]
    #: Whether the requester sent C-CANCEL for this request (PS3.7 9.3.2.3).
    is_cancelled: Callable[[], bool] = lambda: False


class FindService:
    """Answers C-FIND requests of the Study Root and Patient Root models from the index
    (PS3.4 C.4.1.3, C.6.1, C.6.2)."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        queries: SeriesSummaries,
        *,
        max_results: int = 10000,
        match_unknown: bool = True,
        relational: bool = True,
        batch_size: int = BATCH_SIZE,
        visibility: Callable[[], bool] | None = None,
    ) -> None:
        """``relational``: accept relational queries from every requester (PS3.4
        C.4.1.2.2, ``[query] relational``); else only from those that negotiated them.
        ``visibility``: read-your-writes (:meth:`scp.services.visibility.IndexVisibility.
        wait`), called before each query; ``False`` means the index is still behind."""
        self.sessions = sessions
        self.visibility = visibility
        self.queries = queries
        self.max_results = max_results
        self.match_unknown = match_unknown
        self.relational = relational
        self.batch_size = batch_size

    # -- the network layer's C-FIND event ------------------------------------------------
    def handle(
        self, request: CFindRequest, model: Model = "STUDY", negotiated_relational: bool = False
    ) -> Iterator[FindResponse]:
        """The C-FIND SCP's answer to one request: (status, identifier) pairs, pendings
        first.

        ``request`` is what the network layer saw (:class:`CFindRequest`); ``model`` the
        information model of its presentation context (``STUDY`` or ``PATIENT`` root);
        ``negotiated_relational`` the requester asked for relational queries (PS3.4
        C.4.1.1.1).  Each request is logged and counted in ``spacing_scp_find_total`` /
        ``spacing_scp_find_seconds``.
        """
        started = time.monotonic()
        calling = request.calling_ae_title
        outcome: dict[str, Any] = {"level": "-", "matches": 0, "status": status.SUCCESS}
        try:
            try:
                identifier = request.identifier()
            except Exception:
                log.warning("C-FIND from %s: identifier cannot be decoded", calling)
                outcome["status"] = status.FIND_ERROR_UNABLE_TO_PROCESS
                yield (
                    FindError(outcome["status"], "identifier cannot be decoded").status_dataset(),
                    None,
                )
                return
            if self.visibility is not None and not self.visibility():
                outcome["end"] = " (index behind: acknowledged instances may be missing)"
            yield from self.find(
                identifier,
                request.is_cancelled,
                outcome,
                model=model,
                relational=self.relational or negotiated_relational,
            )
        except GeneratorExit:  # the association ended while responses were being sent
            outcome["end"] = " (association ended)"
            raise
        finally:
            ms = (time.monotonic() - started) * 1000.0
            code = int(outcome["status"])
            log.info(
                "C-FIND level=%s from=%s matches=%d status=0x%04X%s ms=%.1f",
                outcome["level"],
                calling,
                outcome["matches"],
                code,
                outcome.get("end", ""),
                ms,
            )
            METRICS.inc(
                "spacing_scp_find_total", level=str(outcome["level"]), status=f"0x{code:04X}"
            )
            METRICS.observe_ms("spacing_scp_find_seconds", ms)

    # -- the query -----------------------------------------------------------------------
    def find(
        self,
        identifier: Dataset,
        is_cancelled: Callable[[], bool] = lambda: False,
        outcome: dict[str, Any] | None = None,
        *,
        model: Model = "STUDY",
        relational: bool | None = None,
    ) -> Iterator[FindResponse]:
        """C-FIND responses for ``identifier``: pendings, then one final status.

        ``model``: ``STUDY`` (Study Root) or ``PATIENT`` (Patient Root); ``relational``
        (default: the service's setting) accepts relational queries (PS3.4 C.4.1.2.2).

        The final Success is left to pynetdicom (it sends 0x0000 when the generator ends);
        Cancel (0xFE00), 0xA700 (more than ``max_results`` matches), 0xA900 and 0xC000 are
        yielded here.
        """
        outcome = outcome if outcome is not None else {}
        outcome.setdefault("matches", 0)
        outcome["status"] = status.SUCCESS
        try:
            request = parse_identifier(
                identifier, model, self.relational if relational is None else relational
            )
            outcome["level"] = request.level
            pending = (
                status.FIND_PENDING_WARNING_OPTIONAL_KEYS
                if request.unsupported
                else status.FIND_PENDING
            )
            limit = self.max_results + 1 if self.max_results > 0 else None
            for match in self.matches(request, limit):
                if is_cancelled():
                    outcome["status"] = status.FIND_CANCEL
                    yield status.FIND_CANCEL, None
                    return
                if self.max_results > 0 and outcome["matches"] >= self.max_results:
                    outcome["status"] = status.FIND_REFUSED_OUT_OF_RESOURCES
                    yield (
                        FindError(
                            status.FIND_REFUSED_OUT_OF_RESOURCES,
                            f"more than {self.max_results} matches: refine the query",
                        ).status_dataset(),
                        None,
                    )
                    return
                outcome["matches"] += 1
                yield pending, match
            if is_cancelled():
                outcome["status"] = status.FIND_CANCEL
                yield status.FIND_CANCEL, None
        except FindError as err:
            outcome["status"] = err.code
            log.info("C-FIND refused: %s", err.comment)
            yield err.status_dataset(), None
        except Exception as exc:
            log.exception("C-FIND failed")
            outcome["status"] = status.FIND_ERROR_UNABLE_TO_PROCESS
            yield (
                FindError(
                    status.FIND_ERROR_UNABLE_TO_PROCESS, f"internal error: {type(exc).__name__}"
                ).status_dataset(),
                None,
            )

    def matches(self, request: FindRequest, limit: int | None = None) -> Iterator[Dataset]:
        """Response identifiers, read in keyset batches of short sessions (ordered by id)."""
        for _hit, identifier in self.matched(request, limit):
            yield identifier

    def matched(
        self, request: FindRequest, limit: int | None = None
    ) -> Iterator[tuple[Hit, Dataset]]:
        """Each match and its response identifier, in keyset batches of short sessions
        (ordered by id); the hits' entities are detached (loaded columns only)."""
        last_id = 0
        produced = 0
        statement: Select[Any] | None = None
        id_column: Any = None
        while limit is None or produced < limit:
            size = self.batch_size if limit is None else min(self.batch_size, limit - produced)
            with self.sessions() as session:
                if statement is None:
                    dialect = session.get_bind().dialect.name
                    statement, id_column = build_statement(request, dialect, self.match_unknown)
                rows = session.execute(
                    statement.where(id_column > last_id).order_by(id_column).limit(size)
                ).all()
                hits = [Hit.from_row(request.level, row) for row in rows]
                compute(session, self.queries, request.level, request.wanted, hits)
                identifiers = [(hit, response_identifier(request, hit)) for hit in hits]
                if hits:
                    last_id = hits[-1].entity(request.level).id
            yield from identifiers
            produced += len(identifiers)
            if len(rows) < size:
                return
