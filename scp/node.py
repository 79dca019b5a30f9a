"""The running node: one AE, one engine and session factory, one file store.

``Node.start`` opens the DICOM listener; ``Node.stop`` stops accepting, lets
running associations finish within a bound, aborts what is left and closes.
"""

from __future__ import annotations

import json
import logging
import socket
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
from scp.net.ae import build_ae, configure_pynetdicom
from scp.net.handlers import Handlers
from scp.net.policy import AssociationPolicy
from scp.net.scu import StorageSCU
from scp.net.server import GuardedAssociationServer, start_listener, transport_bindings
from scp.services.find import FindService
from scp.services.forwarding import Forwarder
from scp.services.indexer import Indexer, IndexerThread
from scp.services.ingest import Ingestor
from scp.services.series_query import IndexQueries
from scp.services.visibility import IndexVisibility
from storage.db import ensure_schema, make_engine, make_session_factory
from storage.filestore import FileStore
from storage.journal import JournalWriter

log = logging.getLogger("spacing_scp.node")


def store_tmp_name(cfg: Config, worker: int = 0) -> str:
    """This process's receive folder under ``tmp/``: host, port and process index name it."""
    host = "".join(c if c.isalnum() or c in "-_." else "_" for c in socket.gethostname())
    return f"{host}-{cfg.node.port}" + (f"-{worker}" if worker else "")


def journal_dir(cfg: Config) -> Path:
    """The ingest journal's folder (:mod:`storage.journal`): ``<data_dir>/journal``."""
    return cfg.data_dir / "journal"


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
        self.store = FileStore(cfg.data_dir, tmp_name=store_tmp_name(cfg, worker))
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
        self.forwarder = Forwarder(cfg, self.sessions, self.store, StorageSCU)
        self.visibility: IndexVisibility | None = None
        self.indexer: IndexerThread | None = None
        #: This process runs the forwarding workers (else a worker or the indexer process).
        self.forwards = not worker and not (beside and external_indexer)
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
            visibility=self.visibility.wait if self.visibility is not None else None,
        )
        self.api: ApiServer | None = None
        self.ae: AE | None = None
        self.server: GuardedAssociationServer | None = None
        self._stopped = threading.Event()

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.server_address[1])

    def listening_fd(self) -> int:
        """The listening socket's descriptor (passed to the extra receiving processes)."""
        assert self.server is not None and self.server.socket is not None
        return self.server.socket.fileno()

    def start(self) -> None:
        for action in self.store.recover():
            log.info("start-up recovery: %s", action)
        configure_pynetdicom(self.cfg, str(self.store.tmp))
        self.ae = build_ae(self.cfg)
        log.info(
            "effective configuration (%s): %s", self.cfg.source, json.dumps(self.cfg.effective())
        )
        self.server = start_listener(
            self.ae,
            self.cfg,
            evt_handlers=[
                *self.policy.bindings(),
                *transport_bindings(),
                *self.handlers.bindings(),
            ],
            listen_fd=self.listen_fd,
        )
        if self.cfg.http.enabled and not self.worker:
            app = build_app(
                self.sessions,
                self.queries,
                self.cfg.node.ae_title,
                token=self.cfg.http.token,
                gauges=self._gauges,
                visibility=self.visibility.wait if self.visibility is not None else None,
                destinations=[d.name for d in self.cfg.destinations],
            )
            self.api = ApiServer(app, self.cfg.http.host, self.cfg.http.port)
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

    def _gauges(self) -> dict[str, float]:
        out = self.forwarder.gauges()
        if self.visibility is not None:
            out.update(self.visibility.gauges())
        return out

    def stop(self, grace_s: float | None = None) -> None:
        """Stop accepting, let running associations finish within ``grace_s``, close."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        grace = self.cfg.node.shutdown_grace_s if grace_s is None else grace_s
        self.forwarder.request_stop()  # no new batches; a running C-STORE finishes
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


class IndexerProcess:
    """The indexer process of ``serve`` with ``[node] indexer = "process"``: indexes the
    receiving processes' journals in batches and runs the forwarding workers, on the
    second core.  On start it first indexes whatever the journal still holds (recovery
    after a crash), while the receiving processes already serve."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.store = FileStore(cfg.data_dir, tmp_name=store_tmp_name(cfg) + "-indexer")
        self.engine: Engine = make_engine(cfg.database_url)
        ensure_schema(self.engine)
        self.sessions: sessionmaker[Session] = make_session_factory(self.engine)
        self.forwarder = Forwarder(cfg, self.sessions, self.store, StorageSCU)
        self.indexer = IndexerThread(indexer_for(cfg, self.sessions, self.forwarder))

    def start(self) -> None:
        for action in self.store.recover():
            log.info("start-up recovery: %s", action)
        self.indexer.start()
        self.forwarder.start()
        log.info("indexer running (journal %s)", journal_dir(self.cfg))

    def stop(self, grace_s: float | None = None) -> None:
        """Index what the journal holds, then stop forwarding within ``grace_s``."""
        grace = self.cfg.node.shutdown_grace_s if grace_s is None else grace_s
        self.forwarder.request_stop()
        self.indexer.stop()
        self.forwarder.stop(grace)
        self.engine.dispose()
        log.info("indexer stopped")
