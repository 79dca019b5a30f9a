"""PACS stand-ins for forwarding tests: a scripted pynetdicom Storage SCP, dcmtk's storescp."""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.dataset import Dataset
from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from scp.net.ae import ACCEPTED_TRANSFER_SYNTAXES
from tests.conftest import dataset_bytes, dcmtk_env, dcmtk_tool, free_port


@dataclass
class Stored:
    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    calling_ae_title: str
    data: bytes  # the data set as it came over the network (no File Meta)

    def dataset(self) -> Dataset:
        ds = dcmread(BytesIO(self.data), force=True)
        return ds


def wait_until(pred: Callable[[], bool], timeout: float = 20.0, step: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(step)
    return pred()


class Pacs:
    """A Storage SCP in a thread, recording every C-STORE; statuses can be scripted."""

    def __init__(
        self,
        port: int | None = None,
        ae_title: str = "PACS",
        *,
        transfer_syntaxes: Sequence[str] = ACCEPTED_TRANSFER_SYNTAXES,
        sop_classes: Sequence[str] | None = None,
        status_for: Callable[[str], int] | None = None,
        delay_s: float = 0.0,
    ) -> None:
        self.port = port or free_port()
        self.ae_title = ae_title
        self.transfer_syntaxes = list(transfer_syntaxes)
        self.sop_classes = sop_classes
        self.status_for = status_for or (lambda _sop_class: 0x0000)
        self.delay_s = delay_s
        self.stored: list[Stored] = []
        self.attempts: list[tuple[str, int]] = []  # every C-STORE, with the status answered
        self.associations = 0
        self._lock = threading.Lock()
        self._server: Any = None

    def _on_store(self, event: Any) -> int:
        if self.delay_s:
            time.sleep(self.delay_s)
        req = event.request
        sop_class = str(req.AffectedSOPClassUID)
        sop = str(req.AffectedSOPInstanceUID)
        path = getattr(event, "dataset_path", None)
        try:
            data = dataset_bytes(Path(path)) if path else req.DataSet.getvalue()
        except Exception:
            data = req.DataSet.getvalue()
        code = self.status_for(sop_class)
        with self._lock:
            self.attempts.append((sop, code))
            if code in (0x0000, 0xB000, 0xB006, 0xB007):
                self.stored.append(
                    Stored(
                        sop,
                        sop_class,
                        str(event.context.transfer_syntax),
                        str(event.assoc.requestor.ae_title).strip(),
                        data,
                    )
                )
        return code

    def _on_accepted(self, _event: Any) -> None:
        with self._lock:
            self.associations += 1

    def start(self) -> Pacs:
        ae = AE(ae_title=self.ae_title)
        ae.maximum_pdu_size = 0
        ae.add_supported_context(Verification)
        classes = self.sop_classes or [
            cx.abstract_syntax for cx in AllStoragePresentationContexts if cx.abstract_syntax
        ]
        for sop_class in classes:
            ae.add_supported_context(sop_class, self.transfer_syntaxes)
        self._server = ae.start_server(
            ("127.0.0.1", self.port),
            block=False,
            evt_handlers=[
                (evt.EVT_C_STORE, self._on_store),
                (evt.EVT_ACCEPTED, self._on_accepted),
            ],
        )
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None

    def uids(self) -> Counter[str]:
        with self._lock:
            return Counter(s.sop_instance_uid for s in self.stored)

    def by_uid(self) -> dict[str, Stored]:
        with self._lock:
            return {s.sop_instance_uid: s for s in self.stored}


class DcmtkPacs:
    """dcmtk's ``storescp`` accepting every transfer syntax it knows, files in ``out``."""

    def __init__(
        self, out: Path, ae_title: str = "PACS", port: int | None = None, accept: str = "+xa"
    ) -> None:
        """``accept``: storescp's transfer syntax option (``+xa`` all, ``+xi`` implicit
        VR little endian only...)."""
        self.out = out
        self.port = port or free_port()
        out.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [dcmtk_tool("storescp"), "-aet", ae_title, "-od", str(out), accept, str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=dcmtk_env(),
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        raise RuntimeError("storescp did not start")

    def files(self) -> list[Path]:
        return sorted(p for p in self.out.iterdir() if p.is_file())

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


class Blackhole:
    """A TCP port that accepts connections and never answers (a hung destination)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = int(self.sock.getsockname()[1])

    def close(self) -> None:
        self.sock.close()
