"""Issue 6, items 1-4: who may connect, DICOM TLS, the HTTP API, limits and timeouts.

Everything runs against a real node on a localhost port, with pynetdicom, dcmtk and
hand-written PDUs (tests/raw_peer.py) as peers.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import socket
import ssl
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trustme
from pydicom import dcmread
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from sqlalchemy import func, select

from scp import status
from scp.config import ConfigError, SecurityConfig
from scp.net.policy import AssociationPolicy
from scp.net.tls import client_context
from storage.models import Instance
from tests.conftest import dcmtk_env, dcmtk_tool, make_config, send_files
from tests.dicom_factory import write_ct
from tests.raw_peer import RawPeer, p_data_tf, pdv

NodeFactory = Callable[..., Any]

# -- helpers ------------------------------------------------------------------------------------


@dataclass
class Outcome:
    established: bool
    rejected: bool
    result: int | None = None
    source: int | None = None
    reason: int | None = None


def associate(
    port: int,
    calling: str = "TESTSCU",
    called: str = "SPACING_SCP",
    tls_args: tuple[ssl.SSLContext, str] | None = None,
    keep: list[Any] | None = None,
) -> Outcome:
    """Request an association and report what the node answered (A-ASSOCIATE-AC/RJ).

    The requestor sees the A-ASSOCIATE-RJ as ``assoc.acceptor.primitive`` (pynetdicom
    ``acse._negotiate_as_requestor`` stores the response there): result, source and
    diagnostic are its Result, Source and Reason/Diag. fields (PS3.8 9.3.4).
    """
    ae = AE(ae_title=calling)
    ae.add_requested_context(Verification)
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    ae.acse_timeout = ae.network_timeout = ae.dimse_timeout = 10
    assoc = ae.associate("127.0.0.1", port, ae_title=called, tls_args=tls_args)
    out = Outcome(assoc.is_established, assoc.is_rejected)
    if assoc.is_rejected:
        rj = assoc.acceptor.primitive
        out.result, out.source, out.reason = rj.result, rj.result_source, rj.diagnostic
    if assoc.is_established:
        if keep is not None:
            keep.append(assoc)
        else:
            assert assoc.send_c_echo().Status == 0
            assoc.release()
    return out


def echo(port: int, tls_args: tuple[ssl.SSLContext, str] | None = None) -> bool:
    return associate(port, tls_args=tls_args).established


def stores(node: Any, tmp_path: Path, name: str = "ok.dcm") -> bool:
    [res] = send_files(node.port, [write_ct(tmp_path / name)])
    return res.status == status.SUCCESS


def rejections(caplog: Any) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.WARNING and "association rejected" in r.getMessage()
    ]


# -- 1. who may connect -------------------------------------------------------------------------


def test_policy_rules_in_one_place() -> None:
    policy = AssociationPolicy(
        SecurityConfig(
            allowed_calling_ae_titles=["CT1", "MR1"],
            calling_ae_hosts={"CT1": ["10.1.2.0/24", "192.168.7.7"]},
        ),
        "SPACING_SCP",
    )
    assert policy.check("CT1", "SPACING_SCP", "10.1.2.99") is None
    assert policy.check("CT1", "SPACING_SCP", "::ffff:192.168.7.7") is None  # dual stack
    assert policy.check("MR1", "SPACING_SCP", "8.8.8.8") is None  # not pinned
    rj = policy.check("CT1", "SPACING_SCP", "10.1.3.1")
    assert rj is not None and (rj.result, rj.source, rj.reason) == (1, 1, 3)
    assert "10.1.3.1" in rj.why
    rj = policy.check("XA9", "SPACING_SCP", "10.1.2.3")
    assert rj is not None and rj.reason == 3
    rj = policy.check("CT1", "OTHER", "10.1.2.3")
    assert rj is not None and (rj.result, rj.source, rj.reason) == (1, 1, 7)
    with pytest.raises(ConfigError, match=r"calling_ae_hosts\.CT1"):
        AssociationPolicy(SecurityConfig(calling_ae_hosts={"CT1": ["10.0.0.300"]}), "X")
    with pytest.raises(ConfigError, match="allowed_calling_ae_titles"):
        AssociationPolicy(
            SecurityConfig(allowed_calling_ae_titles=["MR1"], calling_ae_hosts={"CT1": ["::1"]}),
            "X",
        )


def test_calling_ae_allow_list(node_factory: NodeFactory, caplog: Any) -> None:
    caplog.set_level(logging.INFO, logger="spacing_scp")
    node = node_factory(security={"allowed_calling_ae_titles": ["CT1", "MR1"]})
    assert associate(node.port, calling="CT1").established
    out = associate(node.port, calling="INTRUDER")
    assert out.rejected and (out.result, out.source, out.reason) == (1, 1, 3)
    [line] = rejections(caplog)
    assert "peer=127.0.0.1:" in line and "calling=INTRUDER" in line
    assert "calling-AE-title-not-recognized" in line
    assert associate(node.port, calling="MR1").established  # still serving


def test_called_ae_title_must_be_the_nodes(
    node_factory: NodeFactory, caplog: Any, tmp_path: Path
) -> None:
    caplog.set_level(logging.INFO, logger="spacing_scp")
    node = node_factory()  # require_called_ae_title defaults to true
    out = associate(node.port, called="SOME_PACS")
    assert out.rejected and (out.result, out.source, out.reason) == (1, 1, 7)
    [line] = rejections(caplog)
    assert "called=SOME_PACS" in line and "called-AE-title-not-recognized" in line
    assert "peer=127.0.0.1:" in line
    # Every line about the association names the title the peer called, never the node's.
    lines = [r.getMessage() for r in caplog.records if "association" in r.getMessage()]
    assert lines and not [m for m in lines if "called=SPACING_SCP" in m], lines
    caplog.clear()
    relaxed = node_factory(security={"require_called_ae_title": False})
    assert associate(relaxed.port, called="SOME_PACS").established
    [res] = send_files(relaxed.port, [write_ct(tmp_path / "a.dcm")], called="SOME_PACS")
    assert res.status == status.SUCCESS
    lines = [r.getMessage() for r in caplog.records if "association" in r.getMessage()]
    assert lines and not [m for m in lines if "called=SPACING_SCP" in m], lines
    with relaxed.sessions() as session:
        assert session.scalars(select(Instance.called_ae_title)).all() == ["SOME_PACS"]


def test_host_pinning_per_calling_ae(node_factory: NodeFactory, caplog: Any) -> None:
    caplog.set_level(logging.INFO, logger="spacing_scp")
    node = node_factory(
        security={"calling_ae_hosts": {"CT1": ["10.20.30.0/24"], "MR1": ["127.0.0.0/8"]}}
    )
    out = associate(node.port, calling="CT1")  # from 127.0.0.1, pinned elsewhere
    assert out.rejected and (out.result, out.source, out.reason) == (1, 1, 3)
    assert associate(node.port, calling="MR1").established  # pinned here
    assert associate(node.port, calling="US1").established  # not pinned, no allow list
    [line] = rejections(caplog)
    assert "calling=CT1" in line and "peer=127.0.0.1:" in line
    assert any("10.20.30.0/24" in r.getMessage() for r in caplog.records)


@pytest.mark.dcmtk
def test_dcmtk_echoscu_sees_the_rejection_reasons(node_factory: NodeFactory) -> None:
    echoscu = dcmtk_tool("echoscu")
    node = node_factory(
        security={"allowed_calling_ae_titles": ["DCMTK"], "calling_ae_hosts": {"DCMTK": ["::1"]}}
    )
    relaxed = node_factory(security={"allowed_calling_ae_titles": ["DCMTK"]})

    def run(port: int, calling: str, called: str = "SPACING_SCP") -> str:
        out = subprocess.run(
            [echoscu, "-aet", calling, "-aec", called, "127.0.0.1", str(port)],
            capture_output=True,
            text=True,
            timeout=30,
            env=dcmtk_env(),
        )
        return (out.stdout + out.stderr).lower()

    assert "calling ae title not recognized" in run(relaxed.port, "STRANGER")
    assert "called ae title not recognized" in run(relaxed.port, "DCMTK", "ELSEWHERE")
    assert "calling ae title not recognized" in run(node.port, "DCMTK")  # wrong host
    assert "rejected" not in run(relaxed.port, "DCMTK")


# -- 2. DICOM TLS -------------------------------------------------------------------------------


@dataclass
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_cert: Path  # signed by another CA
    other_key: Path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: Any) -> Pki:
    root = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    server = ca.issue_cert("localhost", "127.0.0.1", common_name="SPACING_SCP")
    client = ca.issue_cert("modality.example", common_name="CT1")
    other = trustme.CA().issue_cert("intruder.example", common_name="INTRUDER")
    files = {
        "ca": ca.cert_pem,
        "server_cert": server.cert_chain_pems[0],
        "server_key": server.private_key_pem,
        "client_cert": client.cert_chain_pems[0],
        "client_key": client.private_key_pem,
        "other_cert": other.cert_chain_pems[0],
        "other_key": other.private_key_pem,
    }
    for name, blob in files.items():
        blob.write_to_path(str(root / f"{name}.pem"))
    return Pki(**{name: root / f"{name}.pem" for name in files})


def tls_node(node_factory: NodeFactory, pki: Pki, require_client_cert: bool = True) -> Any:
    return node_factory(
        tls={
            "enabled": True,
            "cert_file": str(pki.server_cert),
            "key_file": str(pki.server_key),
            "ca_file": str(pki.ca),
            "require_client_cert": require_client_cert,
        },
        node={"acse_timeout": 3.0, "network_timeout": 5.0},
    )


def client_tls(pki: Pki, *, cert: bool = True) -> tuple[ssl.SSLContext, str]:
    if cert:
        return client_context(pki.ca, pki.client_cert, pki.client_key), "localhost"
    return client_context(pki.ca), "localhost"


def test_tls_mutual_authentication(node_factory: NodeFactory, pki: Pki, tmp_path: Path) -> None:
    node = tls_node(node_factory, pki)
    assert echo(node.port, client_tls(pki))
    # C-STORE over TLS.
    ae = AE(ae_title="CT1")
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", node.port, ae_title="SPACING_SCP", tls_args=client_tls(pki))
    assert assoc.is_established
    ds = dcmread(write_ct(tmp_path / "ct.dcm"))
    assert assoc.send_c_store(ds).Status == status.SUCCESS
    assoc.release()
    # No client certificate, or one from another CA: the handshake fails.
    assert not echo(node.port, client_tls(pki, cert=False))
    other = client_context(pki.ca, pki.other_cert, pki.other_key), "localhost"
    assert not echo(node.port, other)
    assert echo(node.port, client_tls(pki))  # still serving


def test_tls_refuses_old_protocols_and_plain_peers(
    node_factory: NodeFactory, pki: Pki, caplog: Any
) -> None:
    caplog.set_level(logging.INFO, logger="spacing_scp")
    node = tls_node(node_factory, pki)
    old = client_context(pki.ca, pki.client_cert, pki.client_key)
    old.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    old.maximum_version = ssl.TLSVersion.TLSv1_1
    with (
        pytest.raises(ssl.SSLError),
        socket.create_connection(("127.0.0.1", node.port), timeout=5) as raw,
    ):
        old.wrap_socket(raw, server_hostname="localhost")
    # A plain DICOM peer on the TLS port fails cleanly (no association) ...
    assert not associate(node.port).established
    # ... a peer sending garbage is dropped ...
    with socket.create_connection(("127.0.0.1", node.port), timeout=5) as raw:
        raw.sendall(b"\x01\x00\x00\x00\x00\x10" + b"junk" * 4)
        with contextlib.suppress(ConnectionResetError):
            while raw.recv(100):  # a TLS alert, then the node closes
                pass
    assert any("TLS handshake with 127.0.0.1:" in r.getMessage() for r in caplog.records)
    # ... and the node keeps serving TLS peers.
    assert echo(node.port, client_tls(pki))


def test_tls_silent_peer_does_not_block_the_listener(node_factory: NodeFactory, pki: Pki) -> None:
    """pynetdicom does the handshake in the accept loop; the node does it per connection."""
    node = tls_node(node_factory, pki)
    silent = [socket.create_connection(("127.0.0.1", node.port)) for _ in range(3)]
    try:
        started = time.monotonic()
        assert echo(node.port, client_tls(pki))
        assert time.monotonic() - started < 2.0  # not after acse_timeout (3 s)
        # The silent ones are dropped after acse_timeout.
        for sock in silent:
            sock.settimeout(10)
            assert sock.recv(10) == b""
    finally:
        for sock in silent:
            sock.close()


@pytest.mark.dcmtk
def test_dcmtk_storescu_over_tls(node_factory: NodeFactory, pki: Pki, tmp_path: Path) -> None:
    storescu = dcmtk_tool("storescu")
    node = tls_node(node_factory, pki)
    src = write_ct(tmp_path / "ct.dcm")

    port = str(node.port)

    def run(*tls: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [storescu, "-aet", "CT1", "-aec", "SPACING_SCP", *tls, "127.0.0.1", port, str(src)],
            capture_output=True,
            text=True,
            timeout=60,
            env=dcmtk_env(),
        )

    out = run("+tls", str(pki.client_key), str(pki.client_cert), "+cf", str(pki.ca))
    assert out.returncode == 0, out.stdout + out.stderr
    with node.sessions() as s:
        assert s.scalar(select(func.count(Instance.id))) == 1
    # Anonymous TLS (no client certificate) is refused when client certificates are required.
    out = run("+tla", "+cf", str(pki.ca))
    assert out.returncode != 0
    # Plain TCP against the TLS port fails cleanly.
    out = run()
    assert out.returncode != 0
    assert echo(node.port, client_tls(pki))


def test_tls_configuration_errors(tmp_path: Path, pki: Pki) -> None:
    from scp.node import Node

    cfg = make_config(
        tmp_path / "d", tls={"enabled": True, "cert_file": str(pki.server_cert)}, http={}
    )
    node = Node(cfg)
    with pytest.raises(ConfigError, match=r"tls\.cert_file and tls\.key_file"):
        node.start()
    node.engine.dispose()
    cfg = make_config(
        tmp_path / "e",
        tls={
            "enabled": True,
            "cert_file": str(pki.server_cert),
            "key_file": str(pki.server_key),
            "ca_file": str(tmp_path / "missing.pem"),
        },
    )
    node = Node(cfg)
    with pytest.raises(ConfigError, match=r"tls\.ca_file"):
        node.start()
    node.engine.dispose()


# -- 3. HTTP API --------------------------------------------------------------------------------


def _get(port: int, path: str, token: str | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    conn.request("GET", path, headers=headers)
    rsp = conn.getresponse()
    body = rsp.read()
    conn.close()
    return rsp.status, body


def test_http_api_token_phi_and_request_size(node_factory: NodeFactory, tmp_path: Path) -> None:
    node = node_factory(http={"token": "s3cret-token"})
    assert node.api is not None
    port = node.api.port
    [res] = send_files(node.port, [write_ct(tmp_path / "ct.dcm")])
    assert res.status == status.SUCCESS
    assert _get(port, "/health")[0] == 200  # open: for load balancers
    assert _get(port, "/series")[0] == 401
    assert _get(port, "/series", token="wrong")[0] == 401
    code, body = _get(port, "/series", token="s3cret-token")
    assert code == 200
    series = json.loads(body)["items"]
    assert series
    uid = series[0]["series_instance_uid"]
    everything = [body]
    for path in (f"/series/{uid}", f"/series/{uid}/instances", "/metrics"):
        code, body = _get(port, path, token="s3cret-token")
        assert code == 200, path
        everything.append(body)
    text = b"".join(everything)
    # Patient's name (and birth date, sex) are never in the index, so never in the API.
    assert b"Test^Spacing" not in text and b"PatientName" not in text
    assert _get(port, "/series?x=" + "a" * 5000, token="s3cret-token")[0] == 414
    code, _ = _get(port, "/" + "a" * 70000, token="s3cret-token")
    assert code in (414, 400)


def test_http_api_slow_clients_are_cut_off(node_factory: NodeFactory) -> None:
    """Idle clients are closed after the request timeout; over the cap they get 503."""
    from scp.api.app import build_app
    from scp.api.server import ApiServer

    node = node_factory(http={"enabled": False})
    app = build_app(node.sessions, node.queries, "SPACING_SCP")
    api = ApiServer(app, "127.0.0.1", 0, request_timeout_s=1.0, max_connections=4)
    api.start()
    try:
        idle = [socket.create_connection(("127.0.0.1", api.port)) for _ in range(4)]
        time.sleep(0.2)
        code, body = _get(api.port, "/health")  # over the cap: 503 at once, not queued
        assert code == 503 and b"Service Unavailable" in body
        started = time.monotonic()
        for sock in idle:  # slowloris: closed after the request timeout
            sock.settimeout(10)
            assert sock.recv(10) == b""
            sock.close()
        assert time.monotonic() - started < 3
        assert _get(api.port, "/health")[0] == 200
    finally:
        api.stop()


def test_http_api_headers_sent_a_byte_at_a_time_are_cut_off(node_factory: NodeFactory) -> None:
    """The request timeout runs until the whole request has arrived, not from the last byte."""
    from scp.api.app import build_app
    from scp.api.server import ApiServer

    node = node_factory(http={"enabled": False})
    api = ApiServer(
        build_app(node.sessions, node.queries, "SPACING_SCP"), "127.0.0.1", 0, request_timeout_s=1.0
    )
    api.start()
    try:
        sock = socket.create_connection(("127.0.0.1", api.port))
        sock.settimeout(0.2)
        started = time.monotonic()
        closed = False
        for byte in b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100:
            try:
                sock.sendall(bytes([byte]))
                closed = sock.recv(10) == b""
            except TimeoutError:
                continue
            except OSError:
                closed = True
            if closed:
                break
        assert closed and time.monotonic() - started < 3
        sock.close()
        assert _get(api.port, "/health")[0] == 200
    finally:
        api.stop()


# -- 4. limits ----------------------------------------------------------------------------------


def test_max_associations_rejects_with_local_limit_exceeded(
    node_factory: NodeFactory, caplog: Any
) -> None:
    caplog.set_level(logging.INFO, logger="spacing_scp")
    node = node_factory(node={"max_associations": 1})
    held: list[Any] = []
    assert associate(node.port, keep=held).established
    out = associate(node.port, calling="SECOND")
    assert out.rejected and (out.result, out.source, out.reason) == (2, 3, 2)
    assert any("local-limit-exceeded" in line for line in rejections(caplog))
    held[0].release()
    deadline = time.monotonic() + 5
    while node.server.active_associations and time.monotonic() < deadline:
        time.sleep(0.05)
    assert echo(node.port)


def test_max_pdu_is_announced_and_enforced(node_factory: NodeFactory, caplog: Any) -> None:
    caplog.set_level(logging.INFO, logger="spacing_scp")
    caplog.set_level(logging.WARNING, logger="pynetdicom")
    node = node_factory(node={"max_pdu_size": 16384})
    peer = RawPeer(node.port)
    [cx] = peer.associate([(CTImageStorage, ExplicitVRLittleEndian)])
    assert peer.max_pdu == 16384  # A-ASSOCIATE-AC maximum length (PS3.8 D.1)
    # A P-DATA-TF announcing 100 MB is refused when its 6-byte header arrives.
    peer.send(p_data_tf(pdv(cx, b"\x00" * 16, command=False, last=False))[:2])
    peer.send((100 * 1024 * 1024).to_bytes(4, "big") + b"\x00" * 64)
    elapsed = peer.closed_within(5)
    assert elapsed is not None and elapsed < 1.0
    assert any("announced a PDU" in r.getMessage() for r in caplog.records)
    # that one line, not pynetdicom's ERROR lines and traceback besides (a port scan)
    assert not [r for r in caplog.records if r.name.startswith("pynetdicom.dul")]
    # Within the limit, all is well.
    assert echo(node.port)


def test_idle_and_stalled_peers_are_cut_off(node_factory: NodeFactory) -> None:
    node = node_factory(node={"acse_timeout": 1.0, "network_timeout": 2.0})
    # Connects and sends nothing: ARTIM (acse_timeout).
    idle = RawPeer(node.port)
    elapsed = idle.closed_within(6)
    assert elapsed is not None and 0.8 < elapsed < 2.0, elapsed
    # Half an A-ASSOCIATE-RQ header, then silence: the receive timeout (acse_timeout here).
    half = RawPeer(node.port)
    half.send(b"\x01\x00\x00")
    elapsed = half.closed_within(6)
    assert elapsed is not None and elapsed < 2.0, elapsed
    # Associated, then idle: network_timeout.
    quiet = RawPeer(node.port)
    quiet.associate([(CTImageStorage, ExplicitVRLittleEndian)])
    elapsed = quiet.closed_within(6)
    assert elapsed is not None and 1.8 < elapsed < 3.5, elapsed
    # Associated, then half a P-DATA-TF (header announces 1000 bytes, 10 arrive): network_timeout.
    stalled = RawPeer(node.port)
    [cx] = stalled.associate([(CTImageStorage, ExplicitVRLittleEndian)])
    stalled.send(p_data_tf(pdv(cx, b"\x00" * 994, command=False, last=False))[:16])
    elapsed = stalled.closed_within(6)
    assert elapsed is not None and elapsed < 3.5, elapsed
    for peer in (idle, half, quiet, stalled):
        peer.close()
    assert echo(node.port)
    assert not node.server.active_associations or _drains(node)


def _drains(node: Any) -> bool:
    deadline = time.monotonic() + 5
    while node.server.active_associations and time.monotonic() < deadline:
        time.sleep(0.05)
    return not node.server.active_associations


def test_max_instance_bytes_answers_c212(node_factory: NodeFactory, tmp_path: Path) -> None:
    node = node_factory(node={"max_instance_bytes": 4096})
    small = write_ct(tmp_path / "small.dcm", rows=8, columns=8)
    big = write_ct(tmp_path / "big.dcm", rows=128, columns=128)
    [res] = send_files(node.port, [big])
    assert res.status == status.ERROR_CANNOT_UNDERSTAND_TOO_LARGE
    assert res.comment and "exceeds the limit of 4096" in res.comment
    [res] = send_files(node.port, [small])
    assert res.status == status.SUCCESS
    with node.sessions() as s:
        assert s.scalar(select(func.count(Instance.id))) == 1
    assert not list(node.store.tmp.iterdir())


def test_connection_flood_is_capped(node_factory: NodeFactory, caplog: Any) -> None:
    caplog.set_level(logging.INFO, logger="spacing_scp")
    node = node_factory(node={"max_associations": 2, "acse_timeout": 2.0})
    flood = [socket.create_connection(("127.0.0.1", node.port)) for _ in range(12)]
    try:
        time.sleep(0.5)
        assert any("connections open" in r.getMessage() for r in caplog.records)
    finally:
        for sock in flood:
            sock.close()
    assert _drains(node)
    assert echo(node.port)


def test_open_connection_count_returns_to_zero(node_factory: Callable[..., Any]) -> None:
    """The count a shared listener balances on (least connections) forgets every
    connection once it ends: served, released, aborted, or dropped before associating."""
    node = node_factory(node={"acse_timeout": 1.0})
    ae = AE(ae_title="COUNTER")
    ae.add_requested_context(Verification)
    for end in ("release", "abort"):
        assoc = ae.associate("127.0.0.1", node.port, ae_title="SPACING_SCP")
        assert assoc.is_established
        getattr(assoc, end)()
    with socket.create_connection(("127.0.0.1", node.port)):
        pass  # connected, then gone without a PDU
    with socket.create_connection(("127.0.0.1", node.port)) as silent:
        silent.settimeout(5)
        silent.recv(64)  # the node gives up on it after acse_timeout
    deadline = time.monotonic() + 5
    while node.server._open_connections:
        assert time.monotonic() < deadline, node.server._open_connections
        time.sleep(0.02)
