"""Issue 18: a 300 MB instance stored over STOW-RS and retrieved over WADO-RS, with the
node's peak RSS under 150 MB above idle (bodies streamed both ways, never held)."""

from __future__ import annotations

import hashlib
import http.client
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydicom import dcmread

from tests.dicom_factory import write_large_multiframe

BOUNDARY = "large-boundary-0123"


def _body(path: Path) -> tuple[Iterator[bytes], int]:
    head = f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode()
    tail = f"\r\n--{BOUNDARY}--\r\n".encode()

    def chunks() -> Iterator[bytes]:
        yield head
        with open(path, "rb") as fh:
            while data := fh.read(1024 * 1024):
                yield data
        yield tail

    return chunks(), len(head) + path.stat().st_size + len(tail)


def test_300_mb_over_stow_and_wado_keeps_memory_flat(node_process: Any, tmp_path: Path) -> None:
    src = write_large_multiframe(tmp_path / "big.dcm", megabytes=300)
    header = dcmread(src, stop_before_pixels=True)
    node = node_process(data_dir=tmp_path / "data")
    time.sleep(0.5)
    idle_kb = node.rss_kb("VmRSS")

    body, length = _body(src)
    conn = http.client.HTTPConnection("127.0.0.1", node.http_port, timeout=120)
    conn.request(
        "POST",
        "/dicom-web/studies",
        body=body,
        headers={
            "Content-Type": f'multipart/related; type="application/dicom"; boundary={BOUNDARY}',
            "Content-Length": str(length),
        },
    )
    rsp = conn.getresponse()
    answer = json.loads(rsp.read())
    assert rsp.status == 200, answer
    assert answer["00081199"]["Value"][0]["00081155"]["Value"] == [header.SOPInstanceUID]

    url = (
        f"/dicom-web/studies/{header.StudyInstanceUID}/series/{header.SeriesInstanceUID}"
        f"/instances/{header.SOPInstanceUID}"
    )
    conn.request("GET", url, headers={"Accept": 'multipart/related; type="application/dicom"'})
    rsp = conn.getresponse()
    assert rsp.status == 200
    digest, received = hashlib.sha256(), 0
    while data := rsp.read(1024 * 1024):
        digest.update(data)
        received += len(data)
    [stored] = list((tmp_path / "data" / "instances").rglob("*.dcm"))
    assert received > stored.stat().st_size > 300 * 1024 * 1024
    conn.request("GET", f"{url}/frames/1,{int(header.NumberOfFrames)}")
    rsp = conn.getresponse()
    assert rsp.status == 200
    assert len(rsp.read()) > 2 * 1024 * 1024 * 2
    conn.close()

    peak_kb = node.rss_kb("VmHWM")
    assert (peak_kb - idle_kb) < 150 * 1024, f"idle {idle_kb} kB, peak {peak_kb} kB"
    print(f"STOW-RS + WADO-RS of 300 MB: idle {idle_kb} kB, peak {peak_kb} kB")
    assert node.stop() == 0
    # no transfer left behind (the running processes' metrics are not one)
    left = [p for p in (tmp_path / "data" / "tmp").rglob("*") if p.is_file()]
    assert [p for p in left if not p.parent.name.startswith("metrics-")] == []
