"""The running node: one AE, one engine and session factory, one file store.

``Node.start`` opens the DICOM listener; ``Node.stop`` stops accepting, lets
running associations finish within a bound, aborts what is left and closes.
"""

from __future__ import annotations

import json
import logging
import socket
import tempfile
import threading
import time
from typing import Any

from pydicom import config as pydicom_config
from pydicom import uid as pyuid
from pynetdicom import AE, StoragePresentationContexts, _config
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StudyRootQueryRetrieveInformationModelFind,
    Verification,
)
from pynetdicom.transport import ThreadedAssociationServer
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from scp.api.forwarding import add_forward_routes
from scp.api.routes import build_router
from scp.api.server import ApiServer
from scp.config import Config
from scp.net import server as guarded
from scp.net.handlers import Handlers
from scp.net.policy import AssociationPolicy
from scp.net.server import GuardedAssociationServer, Limits
from scp.net.tls import server_context
from scp.services.find import FindService
from scp.services.forwarding import Forwarder
from scp.services.ingest import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME, Ingestor
from storage.db import ensure_schema, make_engine, make_session_factory
from storage.filestore import FileStore
from storage.queries import IndexQueries

log = logging.getLogger("spacing_scp.node")

#: Transfer syntaxes accepted as sent (PS3.5 Annex A); no transcoding.
ACCEPTED_TRANSFER_SYNTAXES: tuple[str, ...] = (
    pyuid.ExplicitVRLittleEndian,
    pyuid.ImplicitVRLittleEndian,
    pyuid.DeflatedExplicitVRLittleEndian,
    pyuid.ExplicitVRBigEndian,
    pyuid.JPEGBaseline8Bit,
    pyuid.JPEGExtended12Bit,
    pyuid.JPEGLossless,
    pyuid.JPEGLosslessSV1,
    pyuid.JPEGLSLossless,
    pyuid.JPEGLSNearLossless,
    pyuid.JPEG2000Lossless,
    pyuid.JPEG2000,
    pyuid.JPEG2000MCLossless,
    pyuid.JPEG2000MC,
    pyuid.HTJ2KLossless,
    pyuid.HTJ2KLosslessRPCL,
    pyuid.HTJ2K,
    pyuid.RLELossless,
    pyuid.MPEG2MPML,
    pyuid.MPEG2MPHL,
    pyuid.MPEG4HP41,
    pyuid.MPEG4HP41BD,
    pyuid.HEVCMP51,
    pyuid.HEVCM10P51,
)


def configure_pynetdicom(cfg: Config, tmp_dir: str) -> None:
    """Process-wide pynetdicom settings (one node per process)."""
    # Receive each data set straight to a file (PS3.8 fragments appended as they come);
    # the handler gets event.dataset_path.  The temporary file lives in the store's tmp/
    # folder, on the same filesystem as the store.
    _config.STORE_RECV_CHUNKED_DATASET = True
    _config.UNRESTRICTED_STORAGE_SERVICE = cfg.node.accept_unknown_sop_classes
    tempfile.tempdir = tmp_dir
    # Lenient on read: pydicom's check of every value read against its VR (a regex per
    # UID, also for each DIMSE primitive pynetdicom builds) only ever warned, into no log
    # anyone reads, and took ~8 % of the CPU per instance. The rules that matter are the
    # pipeline's (scp/pipeline/validate.py), with findings; what the node writes is still
    # checked against its VR (scp/pipeline/record.py). Set once, before any association.
    pydicom_config.settings.reading_validation_mode = pydicom_config.IGNORE


def build_ae(cfg: Config) -> AE:
    ae = AE(ae_title=cfg.node.ae_title)
    ae.implementation_class_uid = IMPLEMENTATION_CLASS_UID
    ae.implementation_version_name = IMPLEMENTATION_VERSION_NAME
    ae.maximum_pdu_size = cfg.node.max_pdu_size
    ae.acse_timeout = cfg.node.acse_timeout
    ae.dimse_timeout = cfg.node.dimse_timeout
    ae.network_timeout = cfg.node.network_timeout
    ae.maximum_associations = cfg.node.max_associations
    # [security]: calling AE allow list and called AE check (PS3.8 9.3.4 reasons 3, 7).
    AssociationPolicy.from_config(cfg).apply(ae)
    ae.add_supported_context(Verification, list(ACCEPTED_TRANSFER_SYNTAXES[:4]))
    # C-FIND SCP, Study Root (PS3.4 C.6.2): scp.services.find over the index.
    ae.add_supported_context(
        StudyRootQueryRetrieveInformationModelFind,
        [pyuid.ExplicitVRLittleEndian, pyuid.ImplicitVRLittleEndian],
    )
    for cx in StoragePresentationContexts:
        if cx.abstract_syntax is not None:
            ae.add_supported_context(cx.abstract_syntax, list(ACCEPTED_TRANSFER_SYNTAXES))
    return ae


def store_tmp_name(cfg: Config, worker: int = 0) -> str:
    """This process's receive folder under ``tmp/``: host, port and process index name it."""
    host = "".join(c if c.isalnum() or c in "-_." else "_" for c in socket.gethostname())
    return f"{host}-{cfg.node.port}" + (f"-{worker}" if worker else "")


class Node:
    """Everything one ``spacing-scp serve`` process runs."""

    def __init__(self, cfg: Config, worker: int = 0, listen_fd: int | None = None) -> None:
        """``worker`` > 0: an extra receiving process of ``[node] processes`` (no HTTP API,
        no forwarding workers: the first process runs those); ``listen_fd``: the first
        process's listening socket, which it accepts from too."""
        self.cfg = cfg
        self.worker = worker
        self.listen_fd = listen_fd
        self.store = FileStore(cfg.data_dir, tmp_name=store_tmp_name(cfg, worker))
        self.engine: Engine = make_engine(cfg.database_url)
        ensure_schema(self.engine)
        self.sessions: sessionmaker[Session] = make_session_factory(self.engine)
        self.ingestor = Ingestor(
            self.store,
            self.sessions,
            ae_title=cfg.node.ae_title,
            policy=cfg.spacing_policy,
            min_free_bytes=cfg.storage.min_free_mb * 1024 * 1024,
            max_instance_bytes=cfg.node.max_instance_bytes,
            tolerance=cfg.tolerance,
        )
        self.forwarder = Forwarder(cfg, self.sessions, self.store)
        if cfg.destinations:
            self.ingestor.on_indexed = self.forwarder.on_indexed
        self.handlers = Handlers(self.ingestor)
        self.policy = AssociationPolicy.from_config(cfg)  # ConfigError on a bad [security]
        self.queries = IndexQueries(cfg.series.quiet_seconds, cfg.tolerance)
        self.handlers.find = FindService(
            self.sessions,
            self.queries,
            max_results=cfg.query.max_results,
            match_unknown=cfg.query.match_unknown,
        )
        self.api: ApiServer | None = None
        self.ae: AE | None = None
        self.server: ThreadedAssociationServer | None = None
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
        self.server = self._start_listener(self.ae)
        if self.cfg.http.enabled and not self.worker:
            router = build_router(
                self.sessions, self.queries, self.cfg.node.ae_title, self.forwarder.gauges
            )
            add_forward_routes(router, self.sessions, [d.name for d in self.cfg.destinations])
            self.api = ApiServer(
                router, self.cfg.http.host, self.cfg.http.port, self.cfg.http.token
            )
            self.api.start()
            log.info("HTTP API on http://%s:%d", self.cfg.http.host, self.api.port)
        log.info(
            "listening on %s:%d as %s (data %s)",
            self.cfg.node.host,
            self.port,
            self.cfg.node.ae_title,
            self.cfg.data_dir,
        )
        if not self.worker:
            self.forwarder.start()

    def _start_listener(self, ae: AE) -> ThreadedAssociationServer:
        """``AE.start_server(block=False)`` with :class:`scp.net.server.GuardedAssociationServer`.

        Same steps as pynetdicom's ``start_server`` (ae.py): make the server, serve it
        on a daemon thread, register it with the AE (its ``shutdown`` unregisters it).
        """
        node = self.cfg.node
        ssl_context = (
            server_context(self.cfg.tls, self.cfg.base_dir) if self.cfg.tls.enabled else None
        )
        server = ae.make_server(
            (node.host, node.port),
            ssl_context=ssl_context,
            evt_handlers=[*self.policy.bindings(), *guarded.bindings(), *self.handlers.bindings()],
            server_class=GuardedAssociationServer,
            limits=Limits(
                acse_timeout=node.acse_timeout,
                network_timeout=node.network_timeout,
                max_pdu_size=node.max_pdu_size,
                max_connections=2 * node.max_associations + 2,
                shared_listener=node.processes > 1,
                listen_fd=self.listen_fd,
                event_reactor=node.reactor == "event",
            ),
        )
        thread = threading.Thread(target=server.serve_forever, name="AcceptorServer", daemon=True)
        thread.start()
        ae._servers.append(server)
        if ssl_context is not None:
            log.info("DICOM TLS on (PS3.15 B.9 BCP 195 profile, TLS 1.2+)")
        return server

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
        self.forwarder.stop(max(0.0, grace - (time.monotonic() - stop_started)))
        if self.api is not None:
            self.api.stop()
        self.engine.dispose()
        log.info("stopped")

    def info(self) -> dict[str, Any]:
        return {"ae_title": self.cfg.node.ae_title, "port": self.port}
