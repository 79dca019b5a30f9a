"""A real Orthanc with its DICOMweb plugin, on free loopback ports, for the tests.

Started from /usr/sbin/Orthanc with a generated JSON configuration (a temporary storage
folder, no DICOM listener in use, no authentication), never the Debian service. Without
Orthanc the tests skip, or fail when ``SPACING_SCP_REQUIRE_ORTHANC=1`` (CI).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import free_port

ORTHANC = "/usr/sbin/Orthanc"
DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"
REQUIRE_ORTHANC = os.environ.get("SPACING_SCP_REQUIRE_ORTHANC") == "1"


def orthanc_available() -> None:
    """Skip (or fail in CI) without Orthanc and its DICOMweb plugin."""
    if os.access(ORTHANC, os.X_OK) and os.path.isfile(DICOMWEB_PLUGIN):
        return
    if REQUIRE_ORTHANC:
        pytest.fail("Orthanc and orthanc-dicomweb are required (SPACING_SCP_REQUIRE_ORTHANC=1)")
    pytest.skip("Orthanc with its DICOMweb plugin is not installed")


class Orthanc:
    """One Orthanc process; ``start``/``stop`` may be repeated (same storage, same port)."""

    def __init__(self, folder: Path) -> None:
        orthanc_available()
        self.folder = folder
        self.http_port = free_port()
        self.config = folder / "orthanc.json"
        folder.mkdir(parents=True, exist_ok=True)
        self.config.write_text(
            json.dumps(
                {
                    "Name": "spacing-scp-test",
                    "StorageDirectory": str(folder / "storage"),
                    "IndexDirectory": str(folder / "storage"),
                    "HttpPort": self.http_port,
                    "DicomPort": free_port(),
                    "DicomServerEnabled": False,
                    "RemoteAccessAllowed": False,
                    "AuthenticationEnabled": False,
                    "HttpsVerifyPeers": False,
                    "Plugins": [DICOMWEB_PLUGIN],
                    "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
                    "StableAge": 1,
                }
            )
        )
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb_root(self) -> str:
        return f"{self.url}/dicom-web"

    def start(self) -> Orthanc:
        log = open(self.folder / "orthanc.log", "ab")  # noqa: SIM115 - the process keeps it
        self.proc = subprocess.Popen(
            [ORTHANC, str(self.config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "TCP_NODELAY": "1"},
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                self.get("/system")
                return self
            except (OSError, urllib.error.URLError):
                if self.proc.poll() is not None:
                    raise RuntimeError(
                        "Orthanc exited: " + (self.folder / "orthanc.log").read_text()[-2000:]
                    ) from None
                time.sleep(0.2)
        raise RuntimeError("Orthanc did not start within 30 s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=10) as rsp:
            return json.loads(rsp.read())

    def sop_instance_uids(self) -> set[str]:
        uids = set()
        for oid in self.get("/instances"):
            tags = self.get(f"/instances/{oid}/simplified-tags")
            uids.add(tags["SOPInstanceUID"])
        return uids
