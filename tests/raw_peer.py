"""A DICOM peer that writes PDUs by hand (PS3.8 9.3), for hostile-input tests.

pynetdicom encodes the A-ASSOCIATE-RQ (``pynetdicom.pdu.A_ASSOCIATE_RQ``) so that the
association itself is ordinary; everything after it -- P-DATA-TF PDUs (PS3.8 9.3.5)
with command and data set fragments, A-ABORT, garbage -- is written byte by byte
with :mod:`struct`, so a test can send what no well-behaved library would.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import time
from dataclasses import dataclass
from io import BytesIO

from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import build_context
from pynetdicom.dsutils import decode, encode
from pynetdicom.pdu import A_ASSOCIATE_AC, A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import (
    A_ASSOCIATE,
    ImplementationClassUIDNotification,
    MaximumLengthNotification,
)

APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"
PDU_ASSOCIATE_AC = 0x02
PDU_ASSOCIATE_RJ = 0x03
PDU_P_DATA_TF = 0x04
PDU_RELEASE_RP = 0x06
PDU_ABORT = 0x07


class PeerClosed(ConnectionError):
    """The node closed the connection."""


def associate_rq(
    calling: str, called: str, contexts: list[tuple[str, str]], max_pdu: int = 0
) -> bytes:
    """An encoded A-ASSOCIATE-RQ PDU (PS3.8 9.3.2); context IDs 1, 3, 5..."""
    primitive = A_ASSOCIATE()
    primitive.application_context_name = APPLICATION_CONTEXT
    primitive.calling_ae_title = calling
    primitive.called_ae_title = called
    cxs = []
    for i, (abstract, transfer) in enumerate(contexts):
        cx = build_context(abstract, [transfer])
        cx.context_id = 2 * i + 1
        cxs.append(cx)
    primitive.presentation_context_definition_list = cxs
    max_length = MaximumLengthNotification()
    max_length.maximum_length_received = max_pdu
    impl = ImplementationClassUIDNotification()
    impl.implementation_class_uid = "1.2.826.0.1.3680043.8.498.77.99"
    primitive.user_information = [max_length, impl]
    pdu = A_ASSOCIATE_RQ()
    pdu.from_primitive(primitive)
    return bytes(pdu.encode())


def pdv(context_id: int, data: bytes, *, command: bool, last: bool) -> bytes:
    """One Presentation Data Value item (PS3.8 9.3.5.1, E.2: message control header)."""
    control = (0x01 if command else 0x00) | (0x02 if last else 0x00)
    return struct.pack(">LBB", len(data) + 2, context_id, control) + data


def p_data_tf(*items: bytes) -> bytes:
    body = b"".join(items)
    return struct.pack(">BBL", PDU_P_DATA_TF, 0, len(body)) + body


def a_abort(source: int = 0, reason: int = 0) -> bytes:
    """A-ABORT PDU (PS3.8 9.3.8)."""
    return struct.pack(">BBLBBBB", PDU_ABORT, 0, 4, 0, 0, source, reason)


def a_release_rq() -> bytes:
    return struct.pack(">BBLL", 0x05, 0, 4, 0)


def c_store_rq(sop_class: str, sop_instance: str, message_id: int = 1) -> bytes:
    """C-STORE-RQ command set (PS3.7 9.3.1.1), implicit VR little endian.

    The UIDs go in as given (encoded with pydicom, no UID validation), so a test
    can put ``..``, ``/`` or 70 characters in the request.
    """
    cmd = Dataset()
    cmd.CommandGroupLength = 0
    cmd.AffectedSOPClassUID = sop_class
    cmd.CommandField = 0x0001
    cmd.MessageID = message_id
    cmd.Priority = 0
    cmd.CommandDataSetType = 0x0000
    cmd.AffectedSOPInstanceUID = sop_instance
    body = encode(cmd, True, True)
    assert body is not None
    cmd.CommandGroupLength = len(body) - 12  # everything after (0000,0000) itself
    out = encode(cmd, True, True)
    assert out is not None
    return out


@dataclass
class Response:
    status: int | None
    comment: str | None
    command: Dataset | None


class RawPeer:
    """One TCP connection to the node, spoken to PDU by PDU."""

    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = 10.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.max_pdu = 16384

    # -- bytes -----------------------------------------------------------------------------
    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _exact(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise PeerClosed(f"connection closed after {len(buf)} of {n} bytes")
            buf += chunk
        return bytes(buf)

    def read_pdu(self) -> tuple[int, bytes]:
        pdu_type, _, length = struct.unpack(">BBL", self._exact(6))
        return pdu_type, self._exact(length)

    def closed_within(self, seconds: float) -> float | None:
        """Seconds until the node closed (or aborted) the connection, ``None`` if it did not.

        Anything the node sends first (an A-ABORT) is read and ignored.
        """
        start = time.monotonic()
        self.sock.settimeout(seconds)
        try:
            while True:
                data = self.sock.recv(65536)
                if not data:
                    return time.monotonic() - start
        except TimeoutError:
            return None
        except OSError:  # reset by the node
            return time.monotonic() - start

    # -- DICOM -----------------------------------------------------------------------------
    def associate(
        self,
        contexts: list[tuple[str, str]],
        calling: str = "RAWPEER",
        called: str = "SPACING_SCP",
    ) -> list[int]:
        """Request an association; return the accepted presentation context IDs."""
        self.send(associate_rq(calling, called, contexts))
        pdu_type, body = self.read_pdu()
        if pdu_type != PDU_ASSOCIATE_AC:
            raise AssertionError(f"association not accepted: PDU type 0x{pdu_type:02X}")
        ac = A_ASSOCIATE_AC()
        ac.decode(struct.pack(">BBL", pdu_type, 0, len(body)) + body)
        prim = ac.to_primitive()
        if prim.maximum_length_received:
            self.max_pdu = int(prim.maximum_length_received)
        return [
            int(cx.context_id)
            for cx in prim.presentation_context_definition_results_list
            if cx.result == 0 and cx.context_id is not None
        ]

    def send_command(self, context_id: int, command: bytes) -> None:
        self.send(p_data_tf(pdv(context_id, command, command=True, last=True)))

    def send_dataset(self, context_id: int, data: bytes, *, last: bool = True) -> None:
        """Data set fragments no larger than the node's maximum PDU."""
        step = max(self.max_pdu - 6, 1024)
        chunks = [data[i : i + step] for i in range(0, len(data), step)] or [b""]
        for i, chunk in enumerate(chunks):
            final = last and i == len(chunks) - 1
            self.send(p_data_tf(pdv(context_id, chunk, command=False, last=final)))

    def c_store(
        self,
        context_id: int,
        data: bytes,
        sop_class: str,
        sop_instance: str,
        message_id: int = 1,
    ) -> Response:
        self.send_command(context_id, c_store_rq(sop_class, sop_instance, message_id))
        self.send_dataset(context_id, data)
        return self.read_response()

    def read_response(self) -> Response:
        """The next DIMSE command the node sends (its C-STORE-RSP / C-ECHO-RSP)."""
        buf = bytearray()
        while True:
            pdu_type, body = self.read_pdu()
            if pdu_type != PDU_P_DATA_TF:
                raise PeerClosed(f"PDU type 0x{pdu_type:02X} instead of a response")
            offset = 0
            while offset < len(body):
                (length,) = struct.unpack(">L", body[offset : offset + 4])
                control = body[offset + 5]
                buf += body[offset + 6 : offset + 4 + length]
                offset += 4 + length
                if control & 0x01 and control & 0x02:
                    cmd = decode(BytesIO(bytes(buf)), True, True)
                    comment = cmd.get("ErrorComment")
                    return Response(cmd.get("Status"), str(comment) if comment else None, cmd)

    def release(self) -> None:
        self.send(a_release_rq())
        pdu_type, _ = self.read_pdu()
        assert pdu_type == PDU_RELEASE_RP, pdu_type
        self.close()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


def echo_rq(message_id: int = 1) -> bytes:
    cmd = Dataset()
    cmd.CommandGroupLength = 0
    cmd.AffectedSOPClassUID = "1.2.840.10008.1.1"
    cmd.CommandField = 0x0030
    cmd.MessageID = message_id
    cmd.CommandDataSetType = 0x0101
    body = encode(cmd, True, True)
    assert body is not None
    cmd.CommandGroupLength = len(body) - 12
    out = encode(cmd, True, True)
    assert out is not None
    return out


__all__ = [
    "ExplicitVRLittleEndian",
    "PeerClosed",
    "RawPeer",
    "a_abort",
    "associate_rq",
    "c_store_rq",
    "echo_rq",
    "p_data_tf",
    "pdv",
]
