"""Issue 18 item 5: forwarding to a DICOMweb archive (``type = "stow-rs"``), with a real
Orthanc and its DICOMweb plugin as the archive; the same outbox, retries and dead letter
as the DIMSE destinations."""

from __future__ import annotations

import json
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
import trustme
from pydicom import dcmread

from scp.config import ConfigError, Destination, load_config
from scp.net.stow_rs import response_status
from scp.services.forwarding.sender import StoreResponse
from storage import outbox_jobs
from storage.models import Instance
from tests.conftest import make_config, send_files
from tests.dicom_factory import ct_dataset, new_uid, write
from tests.orthanc import Orthanc
from tests.pacs import wait_until

FAST = {"poll_s": 0.2, "lease_s": 5.0}


@pytest.fixture
def orthanc(tmp_path: Path) -> Iterator[Orthanc]:
    archive = Orthanc(tmp_path / "orthanc")
    archive.start()
    yield archive
    archive.stop()


def stow_dest(url: str, **kw: Any) -> Destination:
    kw.setdefault("retry_initial_s", 0.1)
    kw.setdefault("retry_max_s", 0.5)
    return Destination(name="archive", type="stow-rs", url=url, **kw)


def node_with(node_factory: Callable[..., Any], tmp_path: Path, dest: Destination) -> Any:
    cfg = make_config(tmp_path / "data", forwarding=FAST)
    cfg.destinations = [dest]
    return node_factory(cfg)


def series(tmp_path: Path, n: int) -> list[Path]:
    study, ser = new_uid(), new_uid()
    return [
        write(
            ct_dataset(study=study, series=ser, instance_number=i + 1, position=(0, 0, float(i))),
            tmp_path / "in" / f"{i}.dcm",
        )
        for i in range(n)
    ]


def jobs(node: Any) -> list[dict[str, Any]]:
    with node.sessions() as session:
        items, _ = outbox_jobs.list_jobs(session, limit=1000)
    return items


def test_every_instance_arrives_in_orthanc(
    node_factory: Callable[..., Any], tmp_path: Path, orthanc: Orthanc
) -> None:
    node = node_with(node_factory, tmp_path, stow_dest(orthanc.dicomweb_root))
    files = series(tmp_path, 5)
    assert all(r.status == 0 for r in send_files(node.port, files))
    uids = {dcmread(p).SOPInstanceUID for p in files}
    assert wait_until(lambda: uids <= orthanc.sop_instance_uids(), timeout=30)
    assert wait_until(lambda: all(j["state"] == "done" for j in jobs(node)), timeout=10)
    # the annotated copy went out: the node's private block is in the archive's copy
    oid = orthanc.get("/instances")[0]
    tags = orthanc.get(f"/instances/{oid}/tags?short")
    assert tags.get("0009,0010") == "SPACING_SCP"


def test_archive_down_and_back_up_loses_nothing(
    node_factory: Callable[..., Any], tmp_path: Path, orthanc: Orthanc
) -> None:
    node = node_with(node_factory, tmp_path, stow_dest(orthanc.dicomweb_root, max_attempts=1000))
    orthanc.stop()
    files = series(tmp_path, 6)
    assert all(r.status == 0 for r in send_files(node.port, files))
    time.sleep(1.5)  # the worker tries, fails, backs off
    states = {j["state"] for j in jobs(node)}
    assert states <= {"pending", "in_flight"}
    assert any(j["last_error"] and "no connection" in j["last_error"] for j in jobs(node))
    orthanc.start()
    uids = {dcmread(p).SOPInstanceUID for p in files}
    assert wait_until(lambda: uids <= orthanc.sop_instance_uids(), timeout=40)
    assert wait_until(lambda: all(j["state"] == "done" for j in jobs(node)), timeout=10)


def test_refused_by_the_archive_ends_dead(node_factory: Callable[..., Any], tmp_path: Path) -> None:
    # a root that refuses STOW-RS (405) is a failure status: retried, then dead
    archive = node_factory()
    url = f"http://127.0.0.1:{archive.api.port}/no-such-root"
    node = node_with(node_factory, tmp_path, stow_dest(url, max_attempts=2))
    [src] = series(tmp_path, 1)
    send_files(node.port, [src])
    assert wait_until(lambda: [j["state"] for j in jobs(node)] == ["dead"], timeout=20)
    assert "STOW-RS HTTP 405" in jobs(node)[0]["last_error"]


def test_node_to_node_over_stow_rs_with_a_token(
    node_factory: Callable[..., Any], tmp_path: Path
) -> None:
    archive = node_factory(http={"token": "t0ken"})
    url = f"http://127.0.0.1:{archive.api.port}/dicom-web"
    node = node_with(node_factory, tmp_path, stow_dest(url, token="t0ken"))
    files = series(tmp_path, 3)
    send_files(node.port, files)
    uids = {dcmread(p).SOPInstanceUID for p in files}

    def arrived() -> bool:
        with archive.sessions() as session:
            return uids <= {i.sop_instance_uid for i in session.query(Instance)}

    assert wait_until(arrived, timeout=20)


def test_response_statuses_map_to_c_store_statuses() -> None:
    ok = b'{"00081199": {"vr": "SQ", "Value": [{"00081155": {"vr": "UI", "Value": ["1.2"]}}]}}'
    assert response_status(200, ok, "1.2") == StoreResponse(0x0000, "")
    warn = (
        b'{"00081199": {"vr": "SQ", "Value": [{"00081155": {"vr": "UI", "Value": ["1.2"]},'
        b' "00081196": {"vr": "US", "Value": [45056]}}]}}'
    )
    assert response_status(202, warn, "1.2").status == 0xB000
    failed = (
        b'{"00081198": {"vr": "SQ", "Value": [{"00081155": {"vr": "UI", "Value": ["1.2"]},'
        b' "00081197": {"vr": "US", "Value": [43264]}}]}}'
    )
    assert response_status(409, failed, "1.2").status == 0xA900
    assert response_status(409, b"", "1.2").status == 0xC210
    assert response_status(401, b"no", "1.2").status == 0x0110
    assert response_status(413, b"", "1.2").status == 0xA700


def test_stow_destination_configuration(tmp_path: Path) -> None:
    def load(text: str) -> Any:
        path = tmp_path / "c.toml"
        path.write_text(text)
        return load_config(path, environ={})

    cfg = load(
        '[[destinations]]\nname = "cloud"\ntype = "stow-rs"\n'
        'url = "https://archive.example/dicom-web"\ntoken = "x"\n'
    )
    (dest,) = cfg.destinations
    assert dest.type == "stow-rs" and dest.verify_tls
    assert "cloud=https://archive.example/dicom-web" in cfg.effective()["destinations"]
    for bad, key in [
        ('type = "stow-rs"\n', "url"),
        ('type = "stow-rs"\nurl = "ftp://x/y/z"\n', "url"),
        ('type = "stow-rs"\nurl = "http://x:1/dw"\nhost = "x"\n', "host"),
        ('type = "stow-rs"\nurl = "http://x:1/dw"\ntoken = "t"\nusername = "u"\n', "token"),
        ('type = "stow-rs"\nurl = "http://x:1/dw"\nusername = "u"\n', "username"),
        ('ae_title = "A"\nhost = "h"\nport = 104\nurl = "http://x:1/dw"\n', "url"),
        ('type = "wado"\nurl = "http://x:1/dw"\n', "type"),
    ]:
        with pytest.raises(ConfigError, match=key):
            load(f'[[destinations]]\nname = "d"\n{bad}')


class _Archive(BaseHTTPRequestHandler):
    """A minimal STOW-RS origin server over TLS: records what it was sent."""

    seen: ClassVar[list[tuple[str, str, int]]] = []

    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        body = self.rfile.read(length)
        self.seen.append((self.path, self.headers.get("Authorization", ""), len(body)))
        answer = json.dumps({"00081199": {"vr": "SQ", "Value": [{}]}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/dicom+json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args: Any) -> None:
        pass


def test_tls_verification_and_basic_auth(node_factory: Callable[..., Any], tmp_path: Path) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Archive)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    url = f"https://127.0.0.1:{server.server_address[1]}/dw"
    try:
        cfg = make_config(tmp_path / "data", forwarding=FAST)
        cfg.destinations = [
            stow_dest(url, username="node", password="pw", ca_file=str(ca_file)),
            Destination(
                name="untrusted", type="stow-rs", url=url, max_attempts=1, retry_initial_s=0.1
            ),
        ]
        node = node_factory(cfg)
        [src] = series(tmp_path, 1)
        send_files(node.port, [src])
        # A certificate that does not verify is a failure of reach (issue 15): the job waits
        # (the destination is down, probed again) and its last error says why.
        assert wait_until(
            lambda: (
                any(
                    "CERTIFICATE_VERIFY_FAILED" in (j["last_error"] or "")
                    for j in jobs(node)
                    if j["destination"] == "untrusted"
                )
                and any(j["state"] == "done" for j in jobs(node) if j["destination"] == "archive")
            ),
            timeout=20,
        )
        by_dest = {j["destination"]: j for j in jobs(node)}
        assert by_dest["archive"]["state"] == "done"
        assert "CERTIFICATE_VERIFY_FAILED" in by_dest["untrusted"]["last_error"]
        [(path, auth, size)] = _Archive.seen
        assert path == "/dw/studies" and auth.startswith("Basic ")
        assert size > src.stat().st_size
    finally:
        server.shutdown()
