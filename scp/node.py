"""The running node: one AE, one engine and session factory, one file store.

``Node.start`` opens the DICOM listener; ``Node.stop`` stops accepting, lets
running associations finish within a bound, aborts what is left and closes.
"""

from __future__ import annotations

import json
import logging
import tempfile
import threading
import time
from typing import Any

from pydicom import uid as pyuid
from pynetdicom import AE, StoragePresentationContexts, _config
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from pynetdicom.transport import ThreadedAssociationServer
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from scp.api.routes import build_router
from scp.api.server import ApiServer
from scp.config import Config
from scp.handlers import Handlers
from scp.ingest import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME, Ingestor
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


def build_ae(cfg: Config) -> AE:
    ae = AE(ae_title=cfg.node.ae_title)
    ae.implementation_class_uid = IMPLEMENTATION_CLASS_UID
    ae.implementation_version_name = IMPLEMENTATION_VERSION_NAME
    ae.maximum_pdu_size = cfg.node.max_pdu_size
    ae.acse_timeout = cfg.node.acse_timeout
    ae.dimse_timeout = cfg.node.dimse_timeout
    ae.network_timeout = cfg.node.network_timeout
    ae.maximum_associations = cfg.node.max_associations
    ae.require_called_aet = False
    ae.add_supported_context(Verification, list(ACCEPTED_TRANSFER_SYNTAXES[:4]))
    for cx in StoragePresentationContexts:
        if cx.abstract_syntax is not None:
            ae.add_supported_context(cx.abstract_syntax, list(ACCEPTED_TRANSFER_SYNTAXES))
    return ae


class Node:
    """Everything one ``spacing-scp serve`` process runs."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.store = FileStore(cfg.data_dir)
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
        self.handlers = Handlers(self.ingestor)
        self.queries = IndexQueries(cfg.series.quiet_seconds, cfg.tolerance)
        self.api: ApiServer | None = None
        self.ae: AE | None = None
        self.server: ThreadedAssociationServer | None = None
        self._stopped = threading.Event()

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.server_address[1])

    def start(self) -> None:
        for action in self.store.recover():
            log.info("start-up recovery: %s", action)
        configure_pynetdicom(self.cfg, str(self.store.tmp))
        self.ae = build_ae(self.cfg)
        log.info(
            "effective configuration (%s): %s", self.cfg.source, json.dumps(self.cfg.effective())
        )
        self.server = self.ae.start_server(
            (self.cfg.node.host, self.cfg.node.port),
            block=False,
            evt_handlers=self.handlers.bindings(),  # type: ignore[arg-type]
        )
        if self.cfg.http.enabled:
            router = build_router(self.sessions, self.queries, self.cfg.node.ae_title)
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

    def stop(self, grace_s: float | None = None) -> None:
        """Stop accepting, let running associations finish within ``grace_s``, close."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        grace = self.cfg.node.shutdown_grace_s if grace_s is None else grace_s
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
        if self.api is not None:
            self.api.stop()
        self.engine.dispose()
        log.info("stopped")

    def info(self) -> dict[str, Any]:
        return {"ae_title": self.cfg.node.ae_title, "port": self.port}
