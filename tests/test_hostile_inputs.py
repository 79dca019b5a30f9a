"""Issue 6, item 5: bad input never hurts.

A corpus of hostile and broken inputs, each sent over a real association to one
running node (data sets through hand-written C-STORE PDUs, tests/raw_peer.py, so
that even the request's UIDs can be anything).  Each gets the right status or an
abort, and after each one:

* a C-ECHO succeeds and a good instance is stored (the node keeps serving);
* nothing partial is left: ``tmp/`` is empty, no ``*.prev`` copy exists, and the
  index holds exactly the instances that were answered with a storing status.
"""

from __future__ import annotations

import logging
import random
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    MRImageStorage,
)
from sqlalchemy import func, select

from scp import status
from scp.node import Node
from storage.models import Instance
from tests.conftest import dataset_bytes, echo_ok, make_config, send_files
from tests.dicom_factory import ct_dataset, new_uid, set_raw, write, write_ct
from tests.raw_peer import (
    PeerClosed,
    RawPeer,
    a_abort,
    associate_rq,
    c_store_rq,
    p_data_tf,
    pdv,
)

STORED = "stored"  # any storing status (success or a warning, PS3.4 B.2.3)
#: Data set bytes, the request's Affected SOP Class UID and Affected SOP Instance UID.
Built = tuple[bytes, str, str]


@dataclass
class Ctx:
    node: Node
    tmp: Path
    indexed: int = 0


@pytest.fixture(scope="module")
def ctx(tmp_path_factory: Any) -> Iterator[Ctx]:
    tmp = tmp_path_factory.mktemp("hostile")
    cfg = make_config(
        tmp / "data",
        node={"acse_timeout": 2.0, "network_timeout": 3.0, "max_pdu_size": 16384},
        http={"enabled": False},
    )
    node = Node(cfg)
    node.start()
    yield Ctx(node, tmp)
    node.stop(grace_s=2)


def index_count(node: Node) -> int:
    with node.sessions() as s:
        return int(s.scalar(select(func.count(Instance.id))) or 0)


def assert_unharmed(c: Ctx, stored: int = 0) -> None:
    """The node still serves, and nothing partial is anywhere."""
    c.indexed += stored
    node = c.node
    deadline = time.monotonic() + 5
    while list(node.store.tmp.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not list(node.store.tmp.iterdir()), "temporary files left behind"
    assert not list(node.cfg.data_dir.rglob("*.prev")), "moved-aside copies left behind"
    assert index_count(node) == c.indexed, "index rows do not match what was stored"
    assert echo_ok(node.port)
    [res] = send_files(node.port, [write_ct(c.tmp / f"good-{new_uid()}.dcm")])
    assert res.status == status.SUCCESS
    c.indexed += 1
    assert index_count(node) == c.indexed


# -- data sets ----------------------------------------------------------------------------------


def _el(group: int, elem: int, vr: bytes, value: bytes, length: int | None = None) -> bytes:
    """An explicit VR little endian element (PS3.5 7.1.2), length as given if any."""
    n = len(value) if length is None else length
    if vr in (b"OB", b"OW", b"SQ", b"UN", b"UT", b"UC", b"UR"):
        return struct.pack("<HH2sHL", group, elem, vr, 0, n) + value
    return struct.pack("<HH2sH", group, elem, vr, n) + value


def _base(tmp: Path, ds: Dataset | None = None) -> tuple[Dataset, bytes]:
    """A valid CT (or ``ds``) and its data set bytes (explicit VR little endian)."""
    ds = ds or ct_dataset()
    path = write(ds, tmp / f"{ds.SOPInstanceUID}.dcm")
    return ds, dataset_bytes(path)


def _nested(depth: int) -> bytes:
    """``depth`` sequences of undefined length, one item each (PS3.5 7.5.2)."""
    head = b""
    tail = b""
    for _ in range(depth):
        head += struct.pack("<HH2sHL", 0x0008, 0x1115, b"SQ", 0, 0xFFFFFFFF)
        head += struct.pack("<HHL", 0xFFFE, 0xE000, 0xFFFFFFFF)
        tail = (
            struct.pack("<HHL", 0xFFFE, 0xE00D, 0) + struct.pack("<HHL", 0xFFFE, 0xE0DD, 0) + tail
        )
    return head + _el(0x0008, 0x1150, b"UI", b"1.2.3\x00") + tail


def _insert_after_sop(data: bytes, extra: bytes) -> bytes:
    """Put ``extra`` (elements of group 0008, > 0018) after SOP Instance UID."""
    at = data.index(struct.pack("<HH", 0x0008, 0x0018))
    (length,) = struct.unpack("<H", data[at + 6 : at + 8])
    cut = at + 8 + length
    return data[:cut] + extra + data[cut:]


@dataclass
class Case:
    name: str
    build: Callable[[Path], Built]
    expected: int | str
    transfer_syntax: str = ExplicitVRLittleEndian
    comment: str | None = None


def _same(
    data_fn: Callable[[bytes], bytes], ds: Callable[[], Dataset] = ct_dataset
) -> Callable[[Path], Built]:
    """A valid data set, changed by ``data_fn``; the request names it as it is."""

    def build(tmp: Path) -> Built:
        d, data = _base(tmp, ds())
        return data_fn(data), str(d.SOPClassUID), str(d.SOPInstanceUID)

    return build


def _with_uid(uid: str, keyword: str = "SOPInstanceUID") -> Callable[[Path], Built]:
    """``uid`` in the data set (and in the request, for the SOP Instance UID)."""

    def build(tmp: Path) -> Built:
        ds = ct_dataset()
        tags = {"SOPInstanceUID": 0x00080018, "StudyInstanceUID": 0x0020000D}
        # latin-1: the bytes pydicom gives the request's UI value (PS3.5 6.1.2.3 default)
        set_raw(ds, tags.get(keyword, 0x0020000E), "UI", uid.encode("latin-1"))
        _, data = _base(tmp, ds)
        request = uid if keyword == "SOPInstanceUID" else str(ds.SOPInstanceUID)
        return data, CTImageStorage, request

    return build


def _mismatch(which: str) -> Callable[[Path], Built]:
    def build(tmp: Path) -> Built:
        d, data = _base(tmp)
        if which == "class":
            return data, MRImageStorage, str(d.SOPInstanceUID)
        return data, CTImageStorage, new_uid()

    return build


def _implicit_data_under_explicit(tmp: Path) -> Built:
    ds = ct_dataset()
    path = write(ds, tmp / "implicit.dcm", ImplicitVRLittleEndian)
    return dataset_bytes(path), CTImageStorage, str(ds.SOPInstanceUID)


def _garbage(_tmp: Path) -> Built:
    rnd = random.Random(6)
    return bytes(rnd.randrange(256) for _ in range(3000)), CTImageStorage, new_uid()


def _wrong_vrs() -> Dataset:
    return ct_dataset(extra=_semantic_wrong_vrs)


def _semantic_wrong_vrs(ds: Dataset) -> None:
    set_raw(ds, 0x00280030, "US", struct.pack("<HH", 5, 6))  # Pixel Spacing as US
    set_raw(ds, 0x00200032, "OB", b"\x01\x02\x03\x04")  # Image Position as OB
    set_raw(ds, 0x00180050, "DS", b"thick")  # Slice Thickness not a number


def _group2_in_dataset(data: bytes) -> bytes:
    # A data set carrying its own Transfer Syntax UID (it would override the negotiated one).
    return _el(0x0002, 0x0010, b"UI", b"1.2.840.10008.1.2\x00") + data


ABORTED = "aborted"  # pynetdicom answers with an A-ABORT (PS3.8 9.3.8)
_CU = status.ERROR_CANNOT_UNDERSTAND
_UID = status.ERROR_CANNOT_UNDERSTAND_UID
_MISMATCH = status.ERROR_DATASET_DOES_NOT_MATCH_SOP_CLASS


def _after_sop(extra: bytes) -> Callable[[Path], Built]:
    return _same(lambda d: _insert_after_sop(d, extra))


_UNDEFINED_UT = struct.pack("<HH2sHL", 0x0008, 0x0020, b"UT", 0, 0xFFFFFFFF)
_BAD_VR = struct.pack("<HH2sH", 0x0008, 0x0020, b"\x00\x07", 4) + b"2026"
_ITEM_DELIMITER = struct.pack("<HHL", 0xFFFE, 0xE00D, 0)


def _broken_fragments(d: bytes) -> bytes:
    pixels = d.index(struct.pack("<HH", 0x7FE0, 0x0010))
    head = struct.pack("<HH2sHL", 0x7FE0, 0x0010, b"OB", 0, 0xFFFFFFFF)
    return d[:pixels] + head + struct.pack("<HHL", 0xFFFE, 0xE000, 4) + b"\x00" * 4


CASES = [
    Case("truncated in the header", _same(lambda d: d[: len(d) // 4]), _CU),
    Case("truncated in the pixel data", _same(lambda d: d[:-40]), _CU),
    Case("invalid VR bytes", _after_sop(_BAD_VR), _CU),
    Case("wrong VRs for known attributes", _same(lambda d: d, _wrong_vrs), STORED),
    Case("element length beyond the data",
         _after_sop(_el(0x0008, 0x0020, b"DA", b"2026", length=0xFFF0)), _CU),
    Case("element length past the end of the file",
         _same(lambda d: d + _el(0x7FE1, 0x0010, b"OB", b"\x00" * 8, length=0x7FFFFFF0)), _CU),
    Case("undefined length on a text element", _after_sop(_UNDEFINED_UT), _CU),
    Case("200 nested sequences", _after_sop(_nested(200)), _CU, comment="nested deeper than 32"),
    Case("33 nested sequences", _after_sop(_nested(33)), _CU, comment="nested deeper than 32"),
    Case("30 nested sequences (legal)", _after_sop(_nested(30)), STORED),
    Case("stray item delimiter at top level", _after_sop(_ITEM_DELIMITER), _CU),
    Case("encapsulated pixel data without a sequence delimiter", _same(_broken_fragments), _CU),
    Case("File Meta elements inside the data set", _same(_group2_in_dataset), _CU,
         comment="group 0002"),
    Case("SOP Class differs from the request", _mismatch("class"), _MISMATCH),
    Case("SOP Instance differs from the request", _mismatch("instance"), _MISMATCH),
    Case("UID with a slash", _with_uid("1.2.3/4"), _UID),
    Case("UID with ..", _with_uid("1.2..3"), _UID),
    Case("UID that is ..", _with_uid(".."), _UID),
    Case("UID with a path", _with_uid("../../../../etc/passwd"), _UID),
    Case("UID with a space", _with_uid("1.2.3 4"), _UID),
    Case("UID with non-ASCII", _with_uid("1.2.3.\u00e94"), _UID),
    # pynetdicom refuses a request UID over 64 characters when decoding the command.
    Case("request UID over 64 characters", _with_uid("1." + "2" * 70), ABORTED),
    Case("Series UID over 64 characters", _with_uid("1." + "2" * 70, "SeriesInstanceUID"), _UID),
    Case("Study UID with ..", _with_uid("1.2..3", "StudyInstanceUID"), _UID),
    Case("Series UID with a NUL", _with_uid("1.2\x003", "SeriesInstanceUID"), _UID),
    # A peer that negotiated implicit VR and sends explicit VR: refused (the walk fails).
    Case("explicit VR data set under implicit VR", _same(lambda d: d), _CU,
         transfer_syntax=ImplicitVRLittleEndian),
    # The reverse is read leniently, as pydicom does (storage/part10.py _walk).
    Case("implicit VR data set under explicit VR", _implicit_data_under_explicit, STORED),
    Case("random bytes as a data set", _garbage, _CU),
    Case("empty data set", lambda _t: (b"", CTImageStorage, new_uid()), _CU),
]  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_data_set(ctx: Ctx, case: Case) -> None:
    data, sop_class, sop_instance = case.build(ctx.tmp)
    peer = RawPeer(ctx.node.port)
    [cx] = peer.associate([(sop_class, case.transfer_syntax)])
    try:
        if case.expected == ABORTED:
            with pytest.raises(PeerClosed, match="0x07"):
                peer.c_store(cx, data, sop_class, sop_instance)
            assert_unharmed(ctx)
            return
        rsp = peer.c_store(cx, data, sop_class, sop_instance)
        peer.release()
    finally:
        peer.close()
    if case.expected == STORED:
        assert rsp.status is not None and status.is_stored(rsp.status), (
            hex(rsp.status or 0),
            rsp.comment,
        )
        assert_unharmed(ctx, stored=1)
    else:
        assert rsp.status == case.expected, (hex(rsp.status or 0), rsp.comment)
        if case.comment:
            assert rsp.comment and case.comment in rsp.comment
        assert_unharmed(ctx)


# -- the connection itself ----------------------------------------------------------------------


def _store_start(peer: RawPeer, tmp: Path, fraction: float) -> None:
    ds, data = _base(tmp, ct_dataset(rows=256, columns=256))
    [cx] = peer.associate([(CTImageStorage, ExplicitVRLittleEndian)])
    peer.send_command(cx, c_store_rq(CTImageStorage, str(ds.SOPInstanceUID)))
    peer.send_dataset(cx, data[: int(len(data) * fraction)], last=False)


def test_abort_in_the_middle_of_a_transfer(ctx: Ctx) -> None:
    peer = RawPeer(ctx.node.port)
    _store_start(peer, ctx.tmp, 0.5)
    deadline = time.monotonic() + 5
    while not list(ctx.node.store.tmp.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert list(ctx.node.store.tmp.iterdir()), "the transfer had started"
    peer.send(a_abort())
    assert peer.closed_within(5) is not None
    assert_unharmed(ctx)


def test_connection_dropped_in_the_middle_of_a_transfer(ctx: Ctx) -> None:
    peer = RawPeer(ctx.node.port)
    _store_start(peer, ctx.tmp, 0.7)
    time.sleep(0.2)
    peer.close()
    assert_unharmed(ctx)


def test_last_fragment_never_comes(ctx: Ctx) -> None:
    """Everything but the last fragment, then silence: cut off after network_timeout."""
    peer = RawPeer(ctx.node.port)
    _store_start(peer, ctx.tmp, 0.9)
    elapsed = peer.closed_within(10)
    assert elapsed is not None and elapsed < 5
    assert_unharmed(ctx)


def _exchange(ctx: Ctx, payload: bytes, associate_first: bool = False) -> RawPeer:
    peer = RawPeer(ctx.node.port)
    if associate_first:
        peer.associate([(CTImageStorage, ExplicitVRLittleEndian)])
    peer.send(payload)
    return peer


_CX = [(CTImageStorage, ExplicitVRLittleEndian)]


def _command(context_id: int, data: bytes, command: bool = True) -> bytes:
    return p_data_tf(pdv(context_id, data, command=command, last=True))


CONNECTION_CASES: list[tuple[str, bytes, bool]] = [
    ("garbage bytes", bytes(random.Random(7).randrange(256) for _ in range(4096)), False),
    ("an HTTP request", b"GET / HTTP/1.1\r\nHost: pacs\r\n\r\n", False),
    ("unknown PDU type", b"\x09\x00\x00\x00\x00\x04abcd", False),
    ("P-DATA before the association", _command(1, b"\x00" * 8), False),
    ("A-ASSOCIATE-RQ with a garbage body",
     b"\x01\x00\x00\x00\x00\x40" + bytes(random.Random(8).randrange(256) for _ in range(64)),
     False),
    ("A-ASSOCIATE-RQ cut short", associate_rq("RAWPEER", "SPACING_SCP", _CX)[:-20], False),
    ("a command set of garbage", _command(1, b"\xde\xad\xbe\xef" * 8), True),
    ("a context that was not accepted", _command(77, b"\x00" * 8), True),
    ("a data set without a command", _command(1, b"\x08\x00\x18\x00", command=False), True),
    ("a second A-ASSOCIATE-RQ", associate_rq("RAWPEER", "SPACING_SCP", _CX), True),
]  # fmt: skip


@pytest.mark.parametrize(
    ("payload", "associate_first"),
    [(p, a) for _, p, a in CONNECTION_CASES],
    ids=[name for name, _, _ in CONNECTION_CASES],
)
def test_hostile_connection(ctx: Ctx, payload: bytes, associate_first: bool) -> None:
    peer = _exchange(ctx, payload, associate_first)
    try:
        # The node aborts or closes (within the timeouts at most), it never crashes.
        elapsed = peer.closed_within(8)
        assert elapsed is not None, "the node kept a hostile connection open"
    except PeerClosed:
        pass
    finally:
        peer.close()
    assert_unharmed(ctx)


def test_many_hostile_peers_at_once(ctx: Ctx) -> None:
    """A burst of garbage connections, then the node serves normally."""
    peers = []
    for i in range(20):
        p = RawPeer(ctx.node.port)
        p.send(bytes(random.Random(i).randrange(256) for _ in range(256)))
        peers.append(p)
    for p in peers:
        assert p.closed_within(8) is not None
        p.close()
    assert_unharmed(ctx)


@pytest.mark.parametrize(
    "payload",
    [_command(1, b"\xde\xad\xbe\xef" * 8), _command(77, b"\x00" * 8)],
    ids=["a command set of garbage", "a context that was not accepted"],
)
def test_undecodable_input_is_one_abort_and_one_line(
    ctx: Ctx, payload: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    """The reactor thread answers with an A-ABORT and one log line: no uncaught exception
    (pytest's unhandled-thread-exception warning is an error), no traceback."""
    caplog.set_level(logging.INFO)
    peer = _exchange(ctx, payload, associate_first=True)
    try:
        assert peer.closed_within(8) is not None
    except PeerClosed:
        pass
    finally:
        peer.close()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not [
        r for r in caplog.records if "aborting the association" in r.getMessage()
    ]:
        time.sleep(0.05)
    lines = [r for r in caplog.records if "aborting the association" in r.getMessage()]
    assert len(lines) == 1 and lines[0].levelno == logging.WARNING
    assert "input it cannot decode" in lines[0].getMessage()
    assert not [r for r in caplog.records if r.exc_info and r.levelno >= logging.ERROR]
    assert_unharmed(ctx)
