"""Orthanc as a receiver of the bench: the peer a site would pick instead of the node
(C++, SQLite index, fsync: the same job).  The harness writes its configuration: DICOM and
HTTP on free loopback ports, storage and index in the run's folder, ``SyncStorageArea``
on (every file and the index fsynced before the answer), ``TCP_NODELAY=1`` in its
environment (Orthanc uses dcmtk's network code, which otherwise waits for a delayed ACK
per message).  The Debian package's service stays stopped and unused.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

ORTHANC = "/usr/sbin/Orthanc"


def orthanc_binary() -> str | None:
    """Orthanc's executable, or ``None`` when the package is not installed."""
    found = shutil.which("Orthanc") or (ORTHANC if os.access(ORTHANC, os.X_OK) else None)
    return found


class OrthancReceiver:
    """``Orthanc CONFIG.json`` with a generated configuration (see the module)."""

    name = "orthanc"
    called_ae_title = "SPACING_SCP"

    def __init__(self, binary: str) -> None:
        self.binary = binary
        self.proc: subprocess.Popen[bytes] | None = None
        self.http_port = 0
        self.storage: Path | None = None
        self.log_file: Any = None

    def describe(self) -> str:
        return (
            f"{self.binary} CONFIG.json (SyncStorageArea true, TCP_NODELAY=1, loopback ports, "
            "storage and SQLite index in the run folder)"
        )

    def start(self, run_dir: Path) -> int:
        from bench.run import free_port, wait_ready

        port, self.http_port = free_port(), free_port()
        storage = self.storage = run_dir / "orthanc"
        storage.mkdir(parents=True)
        config = {
            "Name": "bench",
            "StorageDirectory": str(storage),
            "IndexDirectory": str(storage),
            "SyncStorageArea": True,
            "DicomAet": self.called_ae_title,
            "DicomPort": port,
            "DicomCheckCalledAet": False,
            "DicomServerEnabled": True,
            "HttpPort": self.http_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "Plugins": [],
            "StorageCompression": False,
            "UnknownSopClassAccepted": True,
        }
        path = run_dir / "orthanc.json"
        path.write_text(json.dumps(config, indent=2))
        log = run_dir / "orthanc.log"
        self.log_file = open(log, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [self.binary, str(path)],
            stdout=self.log_file,
            stderr=subprocess.STDOUT,
            env={**os.environ, "TCP_NODELAY": "1"},
        )
        wait_ready(self.proc, port, self.called_ae_title, log)
        return port

    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> int:
        from bench.run import stop_process

        assert self.proc is not None
        code = stop_process(self.proc)
        self.log_file.close()
        return code

    def verify(self, expected: int) -> tuple[int, dict[str, Any]]:
        """Instances stored: Orthanc's attachment files (``xx/yy/<uuid>``; it has stopped,
        so its REST API is gone), not its SQLite index files."""
        assert self.storage is not None
        stored = sum(1 for p in self.storage.glob("*/*/*") if p.is_file() and len(p.name) == 36)
        return stored, {}
