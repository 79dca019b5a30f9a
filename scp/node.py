"""The running node: one AE, one engine and session factory, one file store.

``Node.start`` opens the DICOM listener; ``Node.stop`` stops accepting, lets
running associations finish within a bound, aborts what is left and closes.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import socket
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from pynetdicom import AE
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from scp.api.app import build_app
from scp.api.server import ApiServer
from scp.config import Config
from scp.metrics import METRICS
from scp.net.ae import build_ae, configure_pynetdicom
from scp.net.commitment import (
    CommitmentHandlers,
    CommitmentReportSender,
    CommitmentRequestSender,
)
from scp.net.handlers import Handlers
from scp.net.policy import AssociationPolicy
from scp.net.retrieve import RetrieveHandlers
from scp.net.scu import StorageSCU
from scp.net.server import GuardedAssociationServer, start_listener, transport_bindings
from scp.net.stow_rs import StowRsSender
from scp.services.commitment import CommitmentService, CommitmentWorker
from scp.services.commitment_scu import DestinationCommitment
from scp.services.dicomweb import DicomWeb, QidoService, StowService, WadoService
from scp.services.find import FindService
from scp.services.forwarding import Forwarder
from scp.services.indexer import Indexer, IndexerThread
from scp.services.ingest import Ingestor
from scp.services.retention import Retention, RetentionThread, store_gauges
from scp.services.retrieve import RetrieveService
from scp.services.series_query import IndexQueries
from scp.services.visibility import IndexVisibility
from storage.db import ensure_schema, make_engine, make_session_factory
from storage.filestore import FileStore
from storage.journal import JournalWriter

log = logging.getLogger("spacing_scp.node")
MIB = 1024 * 1024


class StartupError(RuntimeError):
    """The node cannot start here: a port in use, a data directory it cannot write.  The
    message is one line naming the port or the folder (``spacing-scp serve`` prints it)."""


def _bind_failure(what: str, host: str, port: int, exc: OSError) -> StartupError:
    if exc.errno == errno.EADDRINUSE:
        reason = "already in use (another process listens there)"
    else:
        reason = exc.strerror or str(exc)
    return StartupError(f"{what} port {port} on {host}: {reason}")


def check_data_dir(path: Path) -> None:
    """Create ``path`` if needed and write a scratch file in it; :class:`StartupError`
    naming the folder when that fails (read-only, not a folder, no permission)."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise StartupError(f"data directory {path} is not writable: {reason}") from None


def store_tmp_name(cfg: Config, worker: int = 0) -> str:
    """This process's receive folder under ``tmp/``: host, port and process index name it."""
    host = "".join(c if c.isalnum() or c in "-_." else "_" for c in socket.gethostname())
    return f"{host}-{cfg.node.port}" + (f"-{worker}" if worker else "")


def journal_dir(cfg: Config) -> Path:
    """The ingest journal's folder (:mod:`storage.journal`): ``<data_dir>/journal``."""
    return cfg.data_dir / "journal"


def retention_for(cfg: Config, sessions: sessionmaker[Session], store: FileStore) -> Retention:
    """This node's retention (:mod:`scp.services.retention`); its lock holder name says
    which node and process runs the pass."""
    visibility = (
        IndexVisibility(journal_dir(cfg), sessions, owner=store_tmp_name(cfg))
        if cfg.node.indexer == "process"
        else None
    )
    return Retention(
        sessions,
        store,
        cfg.retention,
        holder=f"{store_tmp_name(cfg)}:{os.getpid()}",
        floor_bytes=cfg.storage.min_free_mb * MIB,
        settled=visibility.wait if visibility is not None else None,
    )


def indexer_for(cfg: Config, sessions: sessionmaker[Session], forwarder: Forwarder) -> Indexer:
    """This node's indexer: its own processes' journal segments, forward jobs queued in the
    transaction that indexes each instance."""
    return Indexer(
        journal_dir(cfg),
        sessions,
        tolerance=cfg.tolerance,
        on_indexed=forwarder.on_indexed if cfg.destinations else None,
        owner=store_tmp_name(cfg),
    )


class Node:
    """Everything one ``spacing-scp serve`` process runs."""

    def __init__(
        self,
        cfg: Config,
        worker: int = 0,
        listen_fd: int | None = None,
        *,
        external_indexer: bool = False,
    ) -> None:
        """``worker`` > 0: an extra receiving process of ``[node] processes`` (no HTTP API,
        no forwarding workers: the first process runs those); ``listen_fd``: the first
        process's listening socket, which it accepts from too; ``external_indexer``: with
        ``[node] indexer = "process"``, an :class:`IndexerProcess` indexes and forwards
        (``serve`` starts one); otherwise the first process runs the indexer on a thread."""
        self.cfg = cfg
        self.worker = worker
        self.listen_fd = listen_fd
        check_data_dir(cfg.data_dir)
        self.store = FileStore(cfg.data_dir, tmp_name=store_tmp_name(cfg, worker))
        if cfg.node.receiving_processes > 1 or (external_indexer and not worker):
            # Every process of the node (receiving processes, the indexer process) counts
            # into one folder; the first one serves the sums.
            METRICS.use_multiprocess(metrics_folder(cfg), fresh=not worker)
        self.engine: Engine = make_engine(cfg.database_url)
        ensure_schema(self.engine)
        self.sessions: sessionmaker[Session] = make_session_factory(self.engine)
        beside = cfg.node.indexer == "process"
        self.ingestor = Ingestor(
            self.store,
            self.sessions,
            ae_title=cfg.node.ae_title,
            policy=cfg.spacing_policy,
            min_free_bytes=cfg.storage.min_free_mb * 1024 * 1024,
            max_instance_bytes=cfg.node.max_instance_bytes,
            tolerance=cfg.tolerance,
        )
        self.forwarder = Forwarder(cfg, self.sessions, self.store, StorageSCU, StowRsSender)
        self.visibility: IndexVisibility | None = None
        self.indexer: IndexerThread | None = None
        #: This process runs the forwarding workers (else a worker or the indexer process).
        self.forwards = not worker and not (beside and external_indexer)
        #: Manual deletions (HTTP) and the store's figures; the pass runs beside forwarding.
        self.retention = retention_for(cfg, self.sessions, self.store)
        self.retention_thread: RetentionThread | None = None
        if self.forwards and cfg.retention.enabled:
            self.retention_thread = RetentionThread(self.retention)
            if cfg.retention.min_free_mb:  # a receive below the watermark wakes the pass
                self.ingestor.on_low_space = self.retention_thread.wake
                self.ingestor.low_space_bytes = cfg.retention.min_free_mb * MIB
        if beside:
            self.ingestor.journal = JournalWriter(journal_dir(cfg), store_tmp_name(cfg, worker))
            self.visibility = IndexVisibility(
                journal_dir(cfg), self.sessions, owner=store_tmp_name(cfg)
            )
            if not worker and not external_indexer:
                self.indexer = IndexerThread(indexer_for(cfg, self.sessions, self.forwarder))
        elif cfg.destinations:
            self.ingestor.on_indexed = self.forwarder.on_indexed
        self.handlers = Handlers(self.ingestor)
        self.policy = AssociationPolicy.from_config(cfg)  # ConfigError on a bad [security]
        self.queries = IndexQueries(cfg.series.quiet_seconds, cfg.tolerance)
        self.handlers.find = FindService(
            self.sessions,
            self.queries,
            max_results=cfg.query.max_results,
            match_unknown=cfg.query.match_unknown,
            relational=cfg.query.relational,
            visibility=self.visibility.wait if self.visibility is not None else None,
        )
        self.retrieve = RetrieveHandlers(
            RetrieveService(self.sessions, self.store), cfg.move_destinations
        )
        # Storage Commitment (PS3.4 J): requests are rows; the first process delivers.
        self.commitment_service = CommitmentService(
            self.sessions,
            self.store,
            cfg.commitment,
            [p.ae_title for p in cfg.commitment_peers],
            [d.name for d in cfg.destinations if d.storage_commitment],
            visibility=self.visibility.wait if self.visibility is not None else None,
        )
        self.report_sender = CommitmentReportSender(
            cfg.node.ae_title,
            cfg.commitment_peers,
            timeout_s=cfg.node.dimse_timeout,
            connect_timeout_s=cfg.forwarding.connect_timeout_s,
        )
        self.destination_commitment = DestinationCommitment(
            self.sessions,
            cfg.destinations,
            CommitmentRequestSender(
                cfg.node.ae_title,
                lambda tx, ok, failed: self.destination_commitment.on_report(tx, ok, failed),
                timeout_s=cfg.node.dimse_timeout,
            ),
            resend_after_s=cfg.commitment.forwarded_wait_s / 10,
        )
        self.commitment_worker = CommitmentWorker(
            self.commitment_service,
            self.report_sender,
            [self.destination_commitment.run_once],
        )
        self.commitment = CommitmentHandlers(
            self.commitment_service,
            self.report_sender,
            self.commitment_worker.wake,
            self.destination_commitment.on_report,
        )
        self.dicomweb = DicomWeb(
            qido=QidoService(self.handlers.find, self.sessions),
            wado=WadoService(self.sessions, self.store),
            stow=StowService(self.ingestor),
            tmp_dir=self.store.tmp,
            max_part_bytes=cfg.node.max_instance_bytes,
            max_results=cfg.query.max_results,
        )
        self.api: ApiServer | None = None
        self.ae: AE | None = None
        self.server: GuardedAssociationServer | None = None
        self._stopped = threading.Event()

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.server_address[1])

    def _associations(self) -> int:
        """Associations running now in this process (the overview's figure)."""
        return len(self.server.active_associations) if self.server is not None else 0

    def listening_fd(self) -> int:
        """The listening socket's descriptor (passed to the extra receiving processes)."""
        assert self.server is not None and self.server.socket is not None
        return self.server.socket.fileno()

    def start(self) -> None:
        for action in self.store.recover():
            log.info("start-up recovery: %s", action)
        if not self.worker:  # deletions a crash left between commit and unlink
            self.retention.recover()
        configure_pynetdicom(self.cfg, str(self.store.tmp))
        self.ae = build_ae(self.cfg)
        log.info(
            "effective configuration (%s): %s", self.cfg.source, json.dumps(self.cfg.effective())
        )
        try:
            self.server = start_listener(
                self.ae,
                self.cfg,
                evt_handlers=[
                    *self.policy.bindings(),
                    *transport_bindings(),
                    *self.handlers.bindings(),
                    *self.retrieve.bindings(),
                    *self.commitment.bindings(),
                ],
                listen_fd=self.listen_fd,
            )
        except OSError as exc:
            raise _bind_failure("DICOM", self.cfg.node.host, self.cfg.node.port, exc) from None
        if self.cfg.http.enabled and not self.worker:
            app = build_app(
                self.sessions,
                self.queries,
                self.cfg.node.ae_title,
                token=self.cfg.http.token,
                gauges=self._gauges,
                visibility=self.visibility.wait if self.visibility is not None else None,
                destinations=[d.name for d in self.cfg.destinations],
                data_dir=self.cfg.data_dir,
                swap_rules=self.cfg.swap_rules,
                associations=self._associations,
                index_gauges=self.visibility.gauges if self.visibility is not None else None,
                wake=self.forwarder.wake,
                dicomweb=self.dicomweb,
                retention=self.retention,
            )
            try:
                self.api = ApiServer(app, self.cfg.http.host, self.cfg.http.port)
            except OSError as exc:
                raise _bind_failure("HTTP", self.cfg.http.host, self.cfg.http.port, exc) from None
            self.api.start()
            log.info("HTTP API on http://%s:%d", self.cfg.http.host, self.api.port)
        log.info(
            "listening on %s:%d as %s (data %s)",
            self.cfg.node.host,
            self.port,
            self.cfg.node.ae_title,
            self.cfg.data_dir,
        )
        if self.indexer is not None:
            self.indexer.start()
        if self.forwards:
            self.forwarder.start()
        if self.retention_thread is not None:
            self.retention_thread.start()
        if not self.worker:  # reports go out from the first process, whoever forwards
            self.commitment_worker.start()

    def _gauges(self) -> dict[str, float]:
        out = self.forwarder.gauges()
        if self.visibility is not None:
            out.update(self.visibility.gauges())
        out.update(store_gauges(self.retention.status()))
        return out

    def stop(self, grace_s: float | None = None) -> None:
        """Stop accepting, let running associations finish within ``grace_s``, close."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        grace = self.cfg.node.shutdown_grace_s if grace_s is None else grace_s
        self.forwarder.request_stop()  # no new batches; a running C-STORE finishes
        self.commitment_worker.stop()  # pending reports stay rows: sent after a restart
        stop_started = time.monotonic()
        server = self.server
        if server is not None:
            server.shutdown()  # stops accepting; running associations continue
            deadline = time.monotonic() + grace
            while server.active_associations and time.monotonic() < deadline:
                time.sleep(0.05)
            left = server.active_associations
            for assoc in left:
                log.warning("aborting association still running after %.0fs", grace)
                assoc.abort()
            for assoc in left:
                assoc.join(timeout=5)
        if self.ingestor.journal is not None:
            self.ingestor.journal.close()
        if self.indexer is not None:
            self.indexer.stop()  # indexes what was acknowledged, then returns
        if self.retention_thread is not None:
            self.retention_thread.stop()
        self.forwarder.stop(max(0.0, grace - (time.monotonic() - stop_started)))
        if self.api is not None:
            self.api.stop()
        self.engine.dispose()
        log.info("stopped")

    def info(self) -> dict[str, Any]:
        return {"ae_title": self.cfg.node.ae_title, "port": self.port}

    def catch_up(self) -> int:
        """Index whatever this node's journal still holds (after :meth:`stop`, when the
        indexer process is gone); return the number of records indexed."""
        if self.cfg.node.indexer != "process":
            return 0
        try:
            return indexer_for(self.cfg, self.sessions, self.forwarder).catch_up()
        finally:
            self.engine.dispose()


def metrics_folder(cfg: Config) -> Path:
    """Where the processes of one node count (``prometheus_client`` multiprocess mode)."""
    return cfg.data_dir / "tmp" / f"metrics-{store_tmp_name(cfg)}"


class IndexerProcess:
    """The indexer process of ``serve`` with ``[node] indexer = "process"``: indexes the
    receiving processes' journals in batches and runs the forwarding workers, on the
    second core.  On start it first indexes whatever the journal still holds (recovery
    after a crash), while the receiving processes already serve."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        # its index lag and forwarding counts reach /metrics of the first process
        METRICS.use_multiprocess(metrics_folder(cfg), fresh=False)
        self.store = FileStore(cfg.data_dir, tmp_name=store_tmp_name(cfg) + "-indexer")
        self.engine: Engine = make_engine(cfg.database_url)
        ensure_schema(self.engine)
        self.sessions: sessionmaker[Session] = make_session_factory(self.engine)
        self.forwarder = Forwarder(cfg, self.sessions, self.store, StorageSCU, StowRsSender)
        self.indexer = IndexerThread(indexer_for(cfg, self.sessions, self.forwarder))
        self.retention_thread: RetentionThread | None = None
        if cfg.retention.enabled:
            self.retention_thread = RetentionThread(retention_for(cfg, self.sessions, self.store))

    def start(self) -> None:
        for action in self.store.recover():
            log.info("start-up recovery: %s", action)
        self.indexer.start()
        self.forwarder.start()
        if self.retention_thread is not None:
            self.retention_thread.start()
        log.info("indexer running (journal %s)", journal_dir(self.cfg))

    def stop(self, grace_s: float | None = None) -> None:
        """Index what the journal holds, then stop forwarding within ``grace_s``."""
        grace = self.cfg.node.shutdown_grace_s if grace_s is None else grace_s
        self.forwarder.request_stop()
        if self.retention_thread is not None:
            self.retention_thread.stop()
        self.indexer.stop()
        self.forwarder.stop(grace)
        self.engine.dispose()
        log.info("indexer stopped")
