"""A bare pynetdicom storage receiver: the floor under the node (issue 7).

It does only what no storage node can skip: pynetdicom receives each data set to a
file (chunked receive, the node's 256 KiB maximum PDU, the node's accepted transfer
syntaxes), and the handler fsyncs it, renames it into place and fsyncs the folder;
no parsing, no checks, no index. Its instances/s against dcmtk's ``storescp`` in the
same run is the best ratio any node built on pynetdicom can reach on the machine.

    python -m bench.bare_receiver --port 11113 --out DIR [--reactor event|polling]

``--reactor event`` uses the node's event-driven reactors (:mod:`scp.net.reactor`),
``polling`` pynetdicom's own.
"""

from __future__ import annotations

import argparse
import itertools
import os
import signal
import tempfile
import threading
from pathlib import Path
from typing import Any

from pynetdicom import AE, StoragePresentationContexts, evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from pynetdicom.transport import RequestHandler, ThreadedAssociationServer

from scp.net import compat, reactor
from scp.net.ae import ACCEPTED_TRANSFER_SYNTAXES

AE_TITLE = "SPACING_SCP"
MAX_PDU = 262144


def _fsync_path(path: Path, flags: int) -> None:
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def serve(port: int, out: Path, event_reactor: bool) -> ThreadedAssociationServer:
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / ".tmp"
    tmp.mkdir(exist_ok=True)
    compat.receive_data_sets_to_files()
    tempfile.tempdir = str(tmp)  # pynetdicom's receive file: same filesystem as out/
    counter = itertools.count()
    lock = threading.Lock()

    def on_store(event: Any) -> int:
        received = Path(event.dataset_path)
        with lock:
            n = next(counter)
        _fsync_path(received, os.O_RDONLY)
        os.replace(received, out / f"{n:08d}.dcm")
        _fsync_path(out, os.O_RDONLY | os.O_DIRECTORY)
        return 0x0000

    ae = AE(ae_title=AE_TITLE)
    ae.maximum_pdu_size = MAX_PDU
    ae.maximum_associations = 32
    ae.add_supported_context(Verification)
    for cx in StoragePresentationContexts:
        if cx.abstract_syntax is not None:
            ae.add_supported_context(cx.abstract_syntax, list(ACCEPTED_TRANSFER_SYNTAXES))
    handler = reactor.EventDrivenRequestHandler if event_reactor else RequestHandler
    server = ae.make_server(
        ("127.0.0.1", port),
        evt_handlers=[(evt.EVT_C_STORE, on_store)],
        server_class=ThreadedAssociationServer,
        request_handler=handler,
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--reactor", choices=("event", "polling"), default="event")
    args = p.parse_args()
    server = serve(args.port, args.out, args.reactor == "event")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    server.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
