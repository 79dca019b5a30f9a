"""scp.net.compat: one contract test per pynetdicom private name the node uses.

Each test runs against the installed (locked) pynetdicom and asserts that the private
name exists and behaves as the node relies on, over real associations on free localhost
ports where there is behaviour to see. A pynetdicom release that changes one of them
fails the test named after it (then update scp/net/compat.py, and REQUIREMENT).
"""

from __future__ import annotations

import importlib
import inspect
import queue
import socket
import tempfile
import threading
import time
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pynetdicom
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE, _config, evt
from pynetdicom.association import Association
from pynetdicom.pdu_primitives import A_ABORT
from pynetdicom.sop_class import CTImageStorage, Verification  # type: ignore[attr-defined]
from pynetdicom.transport import AssociationSocket, RequestHandler, ThreadedAssociationServer

from scp.net import compat, compat_receive, reactor
from scp.status import SUCCESS
from tests.conftest import dataset_bytes
from tests.dicom_factory import write_ct
from tests.raw_peer import RawPeer, a_release_rq, c_store_rq

REPO = Path(__file__).resolve().parent.parent
#: A storage SOP class pynetdicom does not know (a private UID root).
UNKNOWN_SOP_CLASS = "1.2.826.0.1.3680043.8.498.4242.1"

Handlers = list[Any]


def _server(
    handlers: Handlers,
    *,
    contexts: list[str] | None = None,
    request_handler: type[RequestHandler] = RequestHandler,
    server_class: type[ThreadedAssociationServer] = ThreadedAssociationServer,
) -> tuple[AE, ThreadedAssociationServer]:
    ae = AE(ae_title="COMPATSCP")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    for sop_class in contexts if contexts is not None else [Verification, CTImageStorage]:
        ae.add_supported_context(sop_class, ExplicitVRLittleEndian)
    server = ae.make_server(
        ("127.0.0.1", 0),
        evt_handlers=handlers,
        server_class=server_class,
        request_handler=request_handler,
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    compat.register_server(ae, server)
    return ae, server


@pytest.fixture
def serve() -> Iterator[Callable[..., ThreadedAssociationServer]]:
    """Start pynetdicom servers (stock unless told); all are shut down afterwards."""
    started: list[AE] = []

    def start(handlers: Handlers | None = None, **kwargs: Any) -> ThreadedAssociationServer:
        ae, server = _server(handlers or [], **kwargs)
        started.append(ae)
        return server

    yield start
    for ae in started:
        ae.shutdown()


def _port(server: ThreadedAssociationServer) -> int:
    return int(server.server_address[1])


def _associate(
    server: ThreadedAssociationServer, *contexts: str, dimse_timeout: float = 10
) -> Association:
    ae = AE(ae_title="COMPATSCU")
    ae.acse_timeout = ae.network_timeout = 10
    ae.dimse_timeout = dimse_timeout
    for sop_class in contexts or (Verification,):
        ae.add_requested_context(sop_class, ExplicitVRLittleEndian)
    return ae.associate("127.0.0.1", _port(server), ae_title="COMPATSCP")


def _minimal(sop_class: str, sop_instance: str) -> Dataset:
    """A data set with only its SOP identity, explicit VR little endian."""
    ds = Dataset()
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_instance
    ds.set_original_encoding(False, True)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds


def _wait(predicate: Callable[[], bool], within_s: float = 5.0) -> None:
    deadline = time.monotonic() + within_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def _recording_server(
    serve: Callable[..., ThreadedAssociationServer], monkeypatch: pytest.MonkeyPatch
) -> tuple[ThreadedAssociationServer, list[tuple[str, bytes]]]:
    """A Storage SCP recording (SOP Instance UID, data set bytes) of each C-STORE."""
    got: list[tuple[str, bytes]] = []

    def on_store(event: Any) -> int:
        got.append((str(event.request.AffectedSOPInstanceUID), event.request.DataSet.getvalue()))
        return SUCCESS

    monkeypatch.setattr(_config, "STORE_RECV_CHUNKED_DATASET", False)
    return serve([(evt.EVT_C_STORE, on_store)]), got


# -- the version check -------------------------------------------------------------------------


def test_supported_is_the_range_locked_in_pyproject() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert compat.REQUIREMENT in project["dependencies"]
    assert compat.supported(), "the installed pynetdicom is outside the locked range"
    pins = dict(
        line.split("==")
        for line in (REPO / "requirements.lock").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    )
    assert compat.supported(pins["pynetdicom"])
    assert compat.supported("3.0.4") and compat.supported("3.0.5.dev0")
    assert not compat.supported("3.0.3") and not compat.supported("3.1.0")
    assert not compat.supported("4.0") and not compat.supported("unknown")


# -- pynetdicom._config ------------------------------------------------------------------------


def test_receive_data_sets_to_files(
    serve: Callable[..., ThreadedAssociationServer],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """STORE_RECV_CHUNKED_DATASET: the handler gets ``event.dataset_path``, a Part 10 file
    in the temporary folder holding the data set bytes as sent."""
    monkeypatch.setattr(_config, "STORE_RECV_CHUNKED_DATASET", False)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    compat.receive_data_sets_to_files()
    assert _config.STORE_RECV_CHUNKED_DATASET is True
    received: list[tuple[Path, bytes]] = []

    def on_store(event: Any) -> int:
        path = Path(event.dataset_path)
        received.append((path, dataset_bytes(path)))
        return SUCCESS

    server = serve([(evt.EVT_C_STORE, on_store)])
    sent = write_ct(tmp_path / "ct.dcm")
    assoc = _associate(server, CTImageStorage)
    assert assoc.send_c_store(dcmread(sent)).Status == SUCCESS
    assoc.release()
    [(path, data)] = received
    assert path.parent == tmp_path
    assert data == dataset_bytes(sent)


def test_send_data_sets_from_files(
    serve: Callable[..., ThreadedAssociationServer],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """STORE_SEND_CHUNKED_DATASET: ``send_c_store(path)`` does not decode the file: the SOP
    identity comes from the File Meta, the data set bytes go out as stored."""
    monkeypatch.setattr(_config, "STORE_SEND_CHUNKED_DATASET", False)
    compat.send_data_sets_from_files()
    assert _config.STORE_SEND_CHUNKED_DATASET is True
    server, got = _recording_server(serve, monkeypatch)
    path = write_ct(tmp_path / "ct.dcm")
    ds = dcmread(path)
    uid = str(ds.SOPInstanceUID)
    del ds.SOPInstanceUID  # a decoding sender could not send this file
    ds.save_as(path)
    assoc = _associate(server, CTImageStorage)
    assert assoc.send_c_store(path).Status == SUCCESS
    assoc.release()
    assert got == [(uid, dataset_bytes(path))]


def test_resolve_stored_sends(
    serve: Callable[..., ThreadedAssociationServer],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``Association.send_c_store`` as pynetdicom's Q/R service classes call it for C-GET
    and C-MOVE sub-operations: a data set with ``resolve_for`` is replaced by what it
    returns (here the stored file's path, streamed); other arguments go through as is."""
    compat.resolve_stored_sends()
    compat.resolve_stored_sends()  # idempotent: wrapped once
    assert getattr(Association.send_c_store, "_resolves_stored", False)
    source = inspect.getsource(importlib.import_module("pynetdicom.service_class"))
    assert "self.assoc.send_c_store(dataset, msg_id=msg_id)" in source  # C-GET
    assert "store_assoc.send_c_store(" in source  # C-MOVE
    monkeypatch.setattr(_config, "STORE_SEND_CHUNKED_DATASET", True)
    server, got = _recording_server(serve, monkeypatch)
    path = write_ct(tmp_path / "ct.dcm")
    uid = str(dcmread(path).SOPInstanceUID)
    seen: list[Any] = []

    class StandIn(Dataset):
        def resolve_for(self, assoc: Any) -> Path:
            seen.append(assoc)
            return path

    stand_in = StandIn()
    stand_in.SOPInstanceUID = uid
    assoc = _associate(server, CTImageStorage)
    assert assoc.send_c_store(stand_in).Status == SUCCESS
    assert assoc.send_c_store(dcmread(path)).Status == SUCCESS  # a plain data set
    assoc.release()
    assert seen == [assoc]
    assert [u for u, _ in got] == [uid, uid] and got[0][1] == dataset_bytes(path)


def test_bound_send_queue(monkeypatch: pytest.MonkeyPatch) -> None:
    """DULServiceProvider.send_pdu / .to_provider_queue: the DIMSE layer queues each
    P-DATA PDU of a message through ``send_pdu``; once bounded, a sending thread waits
    while ``limit`` PDUs are queued, until the DUL thread takes one."""
    from pynetdicom.dimse import DIMSEServiceProvider
    from pynetdicom.dul import DULServiceProvider
    from pynetdicom.pdu_primitives import P_DATA

    assert "self.dul.send_pdu(pdata)" in inspect.getsource(DIMSEServiceProvider.send_msg)
    compat.bound_send_queue(limit=2)
    wrapped = DULServiceProvider.send_pdu
    compat.bound_send_queue(limit=2)  # idempotent: wrapped once, the limit updated
    assert DULServiceProvider.send_pdu is wrapped and getattr(wrapped, "_bounded", False)
    dul = DULServiceProvider(Association(AE(), compat.MODE_ACCEPTOR))
    assert isinstance(dul.to_provider_queue, queue.Queue)
    monkeypatch.setattr(dul, "is_alive", lambda: True)
    dul.send_pdu(P_DATA())
    dul.send_pdu(P_DATA())
    taken: list[float] = []

    def drain() -> None:
        time.sleep(0.3)
        taken.append(time.monotonic())
        dul.to_provider_queue.get()

    threading.Thread(target=drain).start()
    dul.send_pdu(P_DATA())  # waits for the drain
    assert taken and time.monotonic() >= taken[0]
    assert len(dul.to_provider_queue.queue) == 2
    compat.bound_send_queue()  # back to the node's limit


def test_cap_send_pdu() -> None:
    """DIMSEServiceProvider.maximum_pdu_size: the peer's Maximum Length, which ``send_msg``
    fragments every message with; once capped, a peer's 0 (no limit) reads as the cap."""
    from pynetdicom.dimse import DIMSEServiceProvider

    assert "self.maximum_pdu_size" in inspect.getsource(DIMSEServiceProvider.send_msg)
    compat.cap_send_pdu(cap=4096)
    compat.cap_send_pdu(cap=4096)  # idempotent
    assoc = Association(AE(), compat.MODE_ACCEPTOR)
    assoc.requestor.maximum_length = 0
    assert assoc.dimse.maximum_pdu_size == 4096
    assoc.requestor.maximum_length = 16382
    assert assoc.dimse.maximum_pdu_size == 16382
    compat.cap_send_pdu()  # back to the node's cap


def test_accept_unknown_storage(
    serve: Callable[..., ThreadedAssociationServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    """UNRESTRICTED_STORAGE_SERVICE: an unknown storage SOP class is accepted and its
    C-STORE reaches the EVT_C_STORE handler; without it the context is rejected."""
    monkeypatch.setattr(_config, "STORE_RECV_CHUNKED_DATASET", False)
    classes: list[str] = []

    def on_store(event: Any) -> int:
        classes.append(str(event.request.AffectedSOPClassUID))
        return SUCCESS

    ds = _minimal(UNKNOWN_SOP_CLASS, "1.2.826.0.1.3680043.8.498.4242.2")
    monkeypatch.setattr(_config, "UNRESTRICTED_STORAGE_SERVICE", True)  # restored after
    compat.accept_unknown_storage(False)
    assert _config.UNRESTRICTED_STORAGE_SERVICE is False
    refused = _associate(serve([(evt.EVT_C_STORE, on_store)]), UNKNOWN_SOP_CLASS)
    assert not refused.is_established

    compat.accept_unknown_storage(True)
    assert _config.UNRESTRICTED_STORAGE_SERVICE is True
    assoc = _associate(serve([(evt.EVT_C_STORE, on_store)]), UNKNOWN_SOP_CLASS)
    assert assoc.is_established
    assert assoc.send_c_store(ds).Status == SUCCESS
    assoc.release()
    assert classes == [UNKNOWN_SOP_CLASS]


# -- received data sets: their File Meta, their UIDs ------------------------------------------


def test_write_received_file_meta(
    serve: Callable[..., ThreadedAssociationServer],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``dimse_messages.create_file_meta``/``write_file_meta_info`` as ``decode_msg`` calls
    them: the received file is preamble, the writer's bytes (given the association and
    the request's UIDs and the context's transfer syntax), then the data set as sent; a
    writer that raises, or none, gives pynetdicom's own File Meta."""
    monkeypatch.setattr(_config, "STORE_RECV_CHUNKED_DATASET", True)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(compat_receive, "_meta_writer", compat_receive._meta_writer)
    calls: list[tuple[str, str, str, str]] = []
    refused_uid = "1.2.826.0.1.3680043.8.498.4242.9"

    def writer(assoc: Any, sop_class: str, sop_instance: str, syntax: str) -> bytes:
        calls.append((str(assoc.requestor.ae_title), sop_class, sop_instance, syntax))
        if sop_instance == refused_uid:
            raise ValueError("refused")
        return encoded

    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_file_meta_info

    fm = FileMetaDataset()
    fm.MediaStorageSOPClassUID = CTImageStorage
    fm.MediaStorageSOPInstanceUID = "1.2.3.4"
    fm.TransferSyntaxUID = ExplicitVRLittleEndian
    fm.ImplementationClassUID = "1.2.826.0.1.3680043.8.498.4242.3"
    buffer = DicomBytesIO()
    write_file_meta_info(buffer, fm, enforce_standard=True)  # type: ignore[arg-type]
    encoded = buffer.getvalue()
    compat.write_received_file_meta(writer)
    received: list[tuple[bytes, str, bytes]] = []

    def on_store(event: Any) -> int:
        path = Path(event.dataset_path)
        raw = path.read_bytes()
        implementation = str(
            dcmread(path, stop_before_pixels=True).file_meta.ImplementationClassUID
        )
        received.append((raw[132 : 132 + len(encoded)], implementation, dataset_bytes(path)))
        return SUCCESS

    server = serve([(evt.EVT_C_STORE, on_store)])
    sent = write_ct(tmp_path / "ct.dcm")
    ds = dcmread(sent)
    assoc = _associate(server, CTImageStorage)
    assert assoc.send_c_store(ds).Status == SUCCESS
    ds.SOPInstanceUID = refused_uid
    assert assoc.send_c_store(ds).Status == SUCCESS
    compat.write_received_file_meta(None)
    assert assoc.send_c_store(ds).Status == SUCCESS
    assoc.release()
    uid = str(dcmread(sent).SOPInstanceUID)
    assert calls == [
        ("COMPATSCU", CTImageStorage, uid, ExplicitVRLittleEndian),
        ("COMPATSCU", CTImageStorage, refused_uid, ExplicitVRLittleEndian),
    ]
    [(head, implementation, data), (_, fallback, _), (_, stock, _)] = received
    assert head == encoded
    assert implementation == "1.2.826.0.1.3680043.8.498.4242.3"
    assert data == dataset_bytes(sent)
    assert fallback == stock == pynetdicom.PYNETDICOM_IMPLEMENTATION_UID


def test_hold_back_write_errors(
    serve: Callable[..., ThreadedAssociationServer],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``dimse_messages.NamedTemporaryFile``, written (``write``, ``file.flush``) by
    ``decode_msg`` and closed by the Storage SCP: a write error while a data set arrives
    reaches the handler through ``receive_error`` and the association goes on; without
    the seam the same error aborts the association."""
    import errno

    from pynetdicom import dimse_messages

    monkeypatch.setattr(_config, "STORE_RECV_CHUNKED_DATASET", True)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    stock = tempfile.NamedTemporaryFile  # pynetdicom's own (the node may have wrapped it)
    full_after = {"bytes": 4096}

    class FillingFile:
        """A real temporary file on a disk that is full after ``full_after`` bytes."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            self._file = stock(*args, **kwargs)
            self.name = self._file.name
            self.file = self._file.file
            self.written = 0

        def write(self, data: bytes) -> int:
            self.written += len(data)
            if self.written > full_after["bytes"]:
                raise OSError(errno.ENOSPC, "No space left on device")
            return int(self._file.write(data))

        def fileno(self) -> int:
            return int(self._file.fileno())

        def close(self) -> None:
            self._file.close()

    monkeypatch.setattr(dimse_messages, "NamedTemporaryFile", FillingFile)
    compat.hold_back_write_errors()
    errors: list[int | None] = []

    def on_store(event: Any) -> int:
        error = compat.receive_error(event.dataset_path)
        errors.append(None if error is None else error.errno)
        return 0xA700 if error is not None else SUCCESS

    server = serve([(evt.EVT_C_STORE, on_store)])
    sent = dcmread(write_ct(tmp_path / "ct.dcm", rows=128, columns=128))
    assoc = _associate(server, CTImageStorage)
    assert assoc.send_c_store(sent).Status == 0xA700
    full_after["bytes"] = 10**9  # space again: the same association stores it
    assert assoc.send_c_store(sent).Status == SUCCESS
    assoc.release()
    assert errors == [errno.ENOSPC, None]
    assert compat.receive_error(tmp_path / "nothing.dcm") is None


def test_remember_valid_uids(monkeypatch: pytest.MonkeyPatch) -> None:
    """``dimse_primitives.set_uid``: every UID a DIMSE primitive is given goes through it
    (validated with ``_config.VALIDATORS["UI"]``); after the call a UID is validated once,
    an invalid one each time (and still raises)."""
    from pynetdicom.dimse_primitives import C_STORE

    checked: list[str] = []
    validate = _config.VALIDATORS["UI"]

    def counting(value: Any) -> Any:
        checked.append(str(value))
        return validate(value)

    monkeypatch.setitem(_config.VALIDATORS, "UI", counting)
    compat.remember_valid_uids()
    uid = "1.2.826.0.1.3680043.8.498.4242." + str(time.monotonic_ns())
    request, response = C_STORE(), C_STORE()
    request.AffectedSOPInstanceUID = uid
    response.AffectedSOPInstanceUID = request.AffectedSOPInstanceUID
    assert response.AffectedSOPInstanceUID == uid
    assert checked == [uid]
    too_long = "1." * 40
    for _ in range(2):
        with pytest.raises(ValueError):
            request.AffectedSOPInstanceUID = too_long
    assert checked == [uid, too_long, too_long]


# -- the AE, its servers and their acceptors ---------------------------------------------------


def test_mode_acceptor() -> None:
    assoc = Association(AE(), compat.MODE_ACCEPTOR)
    assert assoc.is_acceptor and not assoc.is_requestor


def test_register_server() -> None:
    """AE._servers: a registered server is stopped by AE.shutdown, and its own shutdown
    needs the registration."""
    ae, server = _server([])
    assert server in ae._servers
    ae.shutdown()
    assert ae._servers == []
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", _port(server)), timeout=1).close()
    ae, server = _server([])
    server.shutdown()  # removes itself from AE._servers
    assert ae._servers == []


def test_set_association_server(serve: Callable[..., ThreadedAssociationServer]) -> None:
    """Association._server: what the stock handler sets; the server lists its acceptors by
    it (``active_associations``: the node's connection limit, and its stop)."""
    for handler in (RequestHandler, reactor.EventDrivenRequestHandler):
        server = serve(request_handler=handler)
        other = server.ae.make_server(("127.0.0.1", 0), request_handler=handler)  # same AE
        assoc = _associate(server)
        (acceptor,) = server.active_associations
        assert acceptor._server is server
        assert other.active_associations == []
        other.server_close()
        assoc.release()
        _wait(lambda s=server: not s.active_associations)


def test_bind_server_handlers(serve: Callable[..., ThreadedAssociationServer]) -> None:
    """AssociationServer._handlers and evt._HandlerBase: the server's handlers, with their
    arguments, and those bound after ``make_server``."""

    def on_echo(_event: Any) -> int:
        return SUCCESS

    def on_open(_event: Any, *_args: Any) -> None:
        return None

    def on_close(_event: Any) -> None:
        return None

    server = serve([(evt.EVT_C_ECHO, on_echo), (evt.EVT_CONN_OPEN, on_open, ["x"])])
    server.bind(evt.EVT_CONN_CLOSE, on_close)
    assoc = Association(server.ae, compat.MODE_ACCEPTOR)
    compat.bind_server_handlers(assoc, server)
    assert assoc.get_handlers(evt.EVT_C_ECHO) == (on_echo, None)
    assert assoc.get_handlers(evt.EVT_CONN_OPEN) == [(on_open, ["x"])]
    assert assoc.get_handlers(evt.EVT_CONN_CLOSE) == [(on_close, None)]


def test_request_handler_hook(serve: Callable[..., ThreadedAssociationServer]) -> None:
    """RequestHandler._create_association: called once per connection for its acceptor."""
    created: list[Association] = []

    class Hooked(compat.RequestHandlerHook):
        def create_association(self) -> Association:
            assoc = super().create_association()
            created.append(assoc)
            return assoc

    server = serve([(evt.EVT_C_ECHO, lambda _e: SUCCESS)], request_handler=Hooked)
    for _ in range(2):
        assoc = _associate(server)
        assert assoc.send_c_echo().Status == SUCCESS
        assoc.release()
    assert len(created) == 2 and all(a.is_acceptor for a in created)


def test_association_hook_run_reactor(serve: Callable[..., ThreadedAssociationServer]) -> None:
    """Association._run_reactor: the established acceptor's loop, run by ``run_reactor``."""
    loops: list[Association] = []

    class Hooked(reactor.EventDrivenAssociation):
        def run_acceptor_reactor(self) -> None:
            loops.append(self)
            compat.AssociationHook.run_acceptor_reactor(self)  # pynetdicom's own loop

    handler = type("Handler", (reactor.EventDrivenRequestHandler,), {"association_class": Hooked})
    server = serve([(evt.EVT_C_ECHO, lambda _e: SUCCESS)], request_handler=handler)
    assoc = _associate(server)
    assert assoc.send_c_echo().Status == SUCCESS
    assoc.release()
    assert len(loops) == 1


def test_association_hook_kill() -> None:
    """Association._kill: assigned by ``kill()``; the loop ends when it is set."""
    kills: list[bool] = []

    class Hooked(compat.AssociationHook):
        def on_kill(self) -> None:
            kills.append(self.kill_requested)

    assoc = Hooked(AE(), compat.MODE_ACCEPTOR)
    assert not assoc.kill_requested
    assoc.kill()
    assert kills == [True] and assoc._kill is True
    Association._run_reactor(assoc)  # pynetdicom's loop returns at once


def test_dul_hook() -> None:
    """DULServiceProvider._kill_thread: assigned by ``kill_dul`` and ``stop_dul`` (Sta1),
    read by the stock loop, which then ends."""
    stops: list[bool] = []

    class Hooked(compat.DULHook):
        def on_stop(self) -> None:
            stops.append(self.stop_requested)

    assoc = Association(AE(), compat.MODE_ACCEPTOR)
    dul = Hooked(assoc)
    assert not dul.stop_requested and dul._kill_thread is False
    dul.kill_dul()
    assert stops == [True] and dul._kill_thread is True
    dul = Hooked(assoc)
    assert dul.stop_dul() is True  # Sta1: stops at once
    assert dul.stop_requested
    dul = Hooked(assoc)
    dul.request_stop()
    dul.run_reactor()  # pynetdicom's loop returns at once
    assert compat.dul_ready(assoc).is_set()


# -- the reactor loops' internals --------------------------------------------------------------


def test_dul_ready(serve: Callable[..., ThreadedAssociationServer]) -> None:
    """Association._dul_ready: unset on a new association, set once its DUL runs."""
    assert not compat.dul_ready(Association(AE(), compat.MODE_ACCEPTOR)).is_set()
    assoc = _associate(serve())
    assert compat.dul_ready(assoc).is_set()
    assoc.release()


def test_idle_timer() -> None:
    """DULServiceProvider._idle_timer: a Timer holding ``network_timeout`` seconds."""
    assoc = Association(AE(), compat.MODE_ACCEPTOR)
    assoc.network_timeout = 7
    timer = compat.idle_timer(assoc.dul)
    assert timer.timeout == 7
    timer.start()
    assert not timer.expired and 6 < timer.remaining <= 7
    timer.timeout = 0
    assert timer.expired
    timer.restart()
    assert timer.expired  # restarted with the same (zero) timeout


def test_run_loop_delay() -> None:
    """DULServiceProvider._run_loop_delay: the stock loop's sleep, a small number of seconds."""
    delay = compat.run_loop_delay(Association(AE(), compat.MODE_ACCEPTOR).dul)
    assert 0 < delay <= 0.01


def test_process_recv_primitive() -> None:
    """DULServiceProvider._process_recv_primitive: a queued user primitive becomes its
    state machine event (A-ABORT: Evt15) and stays queued; ``False`` when none is."""
    dul = Association(AE(), compat.MODE_ACCEPTOR).dul
    assert compat.process_recv_primitive(dul) is False
    primitive = A_ABORT()
    dul.to_provider_queue.put(primitive)
    assert compat.process_recv_primitive(dul) is True
    assert dul.event_queue.get_nowait() == "Evt15"
    assert dul.to_provider_queue.queue[0] is primitive


def test_is_transport_event() -> None:
    """DULServiceProvider._is_transport_event: reads one PDU when the socket has data (an
    A-RELEASE-RQ: Evt12) and says so; ``False`` on a quiet socket."""
    assoc = Association(AE(), compat.MODE_ACCEPTOR)
    ours, peer = socket.socketpair()
    try:
        assoc.set_socket(AssociationSocket(assoc, client_socket=ours))
        assert assoc.dul.event_queue.get_nowait() == "Evt5"  # the connection indication
        assert compat.is_transport_event(assoc.dul) is False
        peer.sendall(a_release_rq())
        _wait(lambda: assoc.dul.socket is not None and assoc.dul.socket.ready)
        assert compat.is_transport_event(assoc.dul) is True
        assert assoc.dul.event_queue.get_nowait() == "Evt12"
    finally:
        ours.close()
        peer.close()


def test_kill_association() -> None:
    """Association._kill set from outside (the DUL's error path) ends the stock loop."""
    assoc = Association(AE(), compat.MODE_ACCEPTOR)
    compat.kill_association(assoc)
    assert assoc._kill is True
    Association._run_reactor(assoc)  # returns at once


def test_reactor_checkpoint() -> None:
    """Association._is_paused and _reactor_checkpoint: ``send_*`` clear the checkpoint and
    wait for the loop to be paused; the loop waits at the checkpoint until it is set."""
    assoc = Association(AE(), compat.MODE_ACCEPTOR)
    compat.reactor_running(assoc)
    assert assoc._is_paused is False
    assoc._reactor_checkpoint.clear()  # what send_c_echo() & co. do before sending
    passed = threading.Event()

    def loop_pass() -> None:
        compat.reactor_checkpoint(assoc)
        passed.set()

    thread = threading.Thread(target=loop_pass)
    thread.start()
    _wait(lambda: assoc._is_paused)  # what send_*() waits for
    assert not passed.wait(0.05)
    assoc._reactor_checkpoint.set()
    thread.join(5)
    assert passed.is_set() and assoc._is_paused is False
    with compat.reactor_paused(assoc):
        assert assoc._is_paused is True
    assert assoc._is_paused is False


def test_serve_request(serve: Callable[..., ThreadedAssociationServer]) -> None:
    """Association._serve_request(msg, context_id): the event reactor hands it each request;
    C-ECHO and C-STORE reach their handlers through it."""
    parameters = list(inspect.signature(Association._serve_request).parameters)
    assert parameters == ["self", "msg", "context_id"]
    server = serve(
        [(evt.EVT_C_ECHO, lambda _e: SUCCESS)],
        request_handler=reactor.EventDrivenRequestHandler,
    )
    assoc = _associate(server)
    for _ in range(3):
        assert assoc.send_c_echo().Status == SUCCESS
    assoc.release()


# -- received data sets ------------------------------------------------------------------------


def test_partial_dataset_file(
    serve: Callable[..., ThreadedAssociationServer],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """DIMSEMessage._data_set_file: the open temporary file of a C-STORE data set cut short
    (seen at EVT_CONN_CLOSE); ``None`` once a message was complete."""
    monkeypatch.setattr(_config, "STORE_RECV_CHUNKED_DATASET", True)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    seen: queue.Queue[tuple[str, bool] | None] = queue.Queue()

    def on_close(event: Any) -> None:
        handle = compat.partial_dataset_file(event.assoc)
        seen.put(None if handle is None else (handle.name, Path(handle.name).is_file()))

    server = serve([(evt.EVT_CONN_CLOSE, on_close), (evt.EVT_C_STORE, lambda _e: SUCCESS)])
    path = write_ct(tmp_path / "ct.dcm")
    data = dataset_bytes(path)
    uid = str(dcmread(path).SOPInstanceUID)

    peer = RawPeer(_port(server))
    [cx] = peer.associate([(CTImageStorage, ExplicitVRLittleEndian)], called="COMPATSCP")
    peer.send_command(cx, c_store_rq(CTImageStorage, uid))
    peer.send_dataset(cx, data[: len(data) // 2], last=False)
    time.sleep(0.2)
    peer.close()
    partial = seen.get(timeout=5)
    assert partial is not None
    name, exists = partial
    assert exists and Path(name).parent == tmp_path

    peer = RawPeer(_port(server))
    [cx] = peer.associate([(CTImageStorage, ExplicitVRLittleEndian)], called="COMPATSCP")
    assert peer.c_store(cx, data, CTImageStorage, uid).status == SUCCESS
    peer.release()
    assert seen.get(timeout=5) is None


# -- association control -----------------------------------------------------------------------


def test_reject_association(serve: Callable[..., ThreadedAssociationServer]) -> None:
    """From EVT_REQUESTED: the requestor gets the A-ASSOCIATE-RJ asked for (PS3.8 9.3.4),
    EVT_REJECTED fires, the association is never negotiated."""
    events: list[str] = []

    def on_requested(event: Any) -> None:
        compat.reject_association(event.assoc, 1, 1, 3)

    server = serve(
        [
            (evt.EVT_REQUESTED, on_requested),
            (evt.EVT_REJECTED, lambda _e: events.append("rejected")),
            (evt.EVT_ACCEPTED, lambda _e: events.append("accepted")),
        ]
    )
    assoc = _associate(server)
    assert assoc.is_rejected and not assoc.is_established
    rj = assoc.acceptor.primitive
    assert (rj.result, rj.result_source, rj.diagnostic) == (1, 1, 3)
    _wait(lambda: not server.active_associations)
    assert events == ["rejected"]


def test_wake_waiting_response(serve: Callable[..., ThreadedAssociationServer]) -> None:
    """DIMSEServiceProvider.msg_queue: after a local abort, a C-STORE waiting for its
    response returns at once without a status (not after the DIMSE timeout)."""
    release, handling = threading.Event(), threading.Event()

    def on_store(_event: Any) -> int:
        handling.set()
        release.wait(10)
        return SUCCESS

    server = serve([(evt.EVT_C_STORE, on_store)])
    assoc = _associate(server, CTImageStorage, dimse_timeout=30)
    ds = _minimal(CTImageStorage, "1.2.826.0.1.3680043.8.498.4242.3")
    answers: queue.Queue[Any] = queue.Queue()
    sender = threading.Thread(target=lambda: answers.put(assoc.send_c_store(ds)))
    sender.start()
    assert handling.wait(5)  # the request is out, the handler holds the response
    started = time.monotonic()
    assoc.abort()
    compat.wake_waiting_response(assoc)
    rsp = answers.get(timeout=5)
    release.set()
    assert time.monotonic() - started < 5
    assert "Status" not in rsp
