"""Reading received Part 10 files without their pixel data, and writing them back.

Memory stays flat whatever the instance size: the structure of the data set is
walked element by element (seeking over values, PS3.5 7.1), the header is
parsed by pydicom with ``stop_before_pixels``, and a stored file is written as
a new File Meta Information (PS3.10 7.1) followed by bytes copied from the
received file by the kernel (``copy_file_range``), never loaded.  A Deflated Explicit VR
Little Endian data set (PS3.5 A.5) is walked and rewritten through a streaming inflate and
deflate (:mod:`storage.deflate`).
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import BinaryIO

from pydicom import dcmread
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.filereader import read_dataset, read_file_meta_info
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ImplicitVRLittleEndian,
)

from storage.deflate import DeflateError, InflatingReader, inflated_size, write_deflated

#: Explicit VRs with a 2-byte reserved field and a 4-byte length (PS3.5 7.1.2).
_LONG_VRS = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
)
_ITEM = 0xFFFEE000
_ITEM_DELIMITER = 0xFFFEE00D
_SEQUENCE_DELIMITER = 0xFFFEE0DD
_UNDEFINED = 0xFFFFFFFF
#: (7FE0,0010) Pixel Data, (7FE0,0008) Float Pixel Data, (7FE0,0009) Double Float Pixel Data.
PIXEL_TAGS = frozenset({0x7FE00010, 0x7FE00008, 0x7FE00009})
#: Deeper nesting than this is refused as hostile (no real IOD nests this deep).
MAX_SEQUENCE_DEPTH = 32
_COPY_CHUNK = 8 * 1024 * 1024


class MalformedDataset(ValueError):
    """The received bytes are not a data set the node can parse (PS3.5 7)."""


@dataclass(frozen=True)
class ReceivedFile:
    """A received Part 10 file: where its parts start, and its header."""

    path: Path
    size: int
    transfer_syntax_uid: UID
    dataset_offset: int
    """Offset of the first data set byte after the File Meta Information."""
    pixel_offset: int | None
    """Offset of the top-level pixel data element's tag, if any; for a deflated data set
    (PS3.5 A.5), its offset in the *inflated* data set."""
    header: Dataset
    """The data set up to (not including) the pixel data, read leniently."""
    file_meta: FileMetaDataset
    meta_bytes: bytes = b""
    """The File Meta Information group as received (after ``DICM``, up to the data set)."""


@dataclass(frozen=True)
class _Encoding:
    implicit: bool
    little: bool

    @property
    def endian(self) -> str:
        return "<" if self.little else ">"


def encoding_of(transfer_syntax: UID) -> tuple[bool, bool]:
    """``(is_implicit_vr, is_little_endian)`` of a transfer syntax (PS3.5 10).

    Unknown (private) transfer syntaxes are read as explicit VR little endian,
    as every compressed transfer syntax of PS3.5 Annex A.4 is.
    """
    if transfer_syntax == ImplicitVRLittleEndian:
        return True, True
    if transfer_syntax == ExplicitVRBigEndian:
        return False, False
    return False, True


class _Walker:
    """Walks the element structure of a data set, checking every length."""

    def __init__(self, fp: BinaryIO, size: int, enc: _Encoding) -> None:
        self.fp = fp
        self.size = size
        self.enc = enc

    def _read(self, n: int) -> bytes:
        data = self.fp.read(n)
        if len(data) != n:
            raise MalformedDataset(f"data set truncated at byte {self.fp.tell()}")
        return data

    def _header(self, enc: _Encoding) -> tuple[int, bytes | None, int]:
        e = enc.endian
        group, elem = struct.unpack(e + "HH", self._read(4))
        tag = (group << 16) | elem
        if group == 0xFFFE:  # items and delimiters never carry a VR (PS3.5 7.5)
            (length,) = struct.unpack(e + "L", self._read(4))
            return tag, None, length
        if enc.implicit:
            (length,) = struct.unpack(e + "L", self._read(4))
            return tag, None, length
        vr = self._read(2)
        if vr in _LONG_VRS:
            self._read(2)
            (length,) = struct.unpack(e + "L", self._read(4))
        elif vr.isalpha() and vr.isupper():
            (length,) = struct.unpack(e + "H", self._read(2))
        else:
            raise MalformedDataset(
                f"element ({group:04X},{elem:04X}) at byte {self.fp.tell() - 6} "
                f"has no valid VR {vr!r} for an explicit VR transfer syntax"
            )
        return tag, vr, length

    def _skip(self, length: int, tag: int) -> None:
        pos = self.fp.tell()
        if pos + length > self.size:
            raise MalformedDataset(
                f"element ({tag >> 16:04X},{tag & 0xFFFF:04X}) length {length} "
                f"runs past the end of the data ({self.size - pos} bytes left)"
            )
        self.fp.seek(length, os.SEEK_CUR)

    def walk_dataset(self, enc: _Encoding, depth: int, end: int | None) -> int | None:
        """Walk elements until ``end``, an item delimiter, or EOF.

        Returns the offset of the first top-level pixel data tag (depth 0 only).
        """
        pixel_offset: int | None = None
        while True:
            pos = self.fp.tell()
            if end is not None and pos >= end:
                if pos > end:
                    raise MalformedDataset(f"item contents overrun their length at byte {pos}")
                return pixel_offset
            if end is None and pos == self.size:
                if depth:
                    raise MalformedDataset("data set truncated inside an undefined-length item")
                return pixel_offset
            tag, vr, length = self._header(enc)
            if tag == _ITEM_DELIMITER:
                if depth == 0:
                    raise MalformedDataset(f"item delimiter at top level at byte {pos}")
                return pixel_offset
            if tag in (_ITEM, _SEQUENCE_DELIMITER):
                raise MalformedDataset(f"unexpected item tag at byte {pos}")
            if depth == 0 and pixel_offset is None and tag in PIXEL_TAGS:
                pixel_offset = pos
            if length == _UNDEFINED:
                if tag in PIXEL_TAGS:
                    self._walk_fragments(enc)
                else:
                    # SQ, or UN of undefined length: implicit VR LE inside (PS3.5 6.2.2)
                    inner = _Encoding(True, True) if vr == b"UN" else enc
                    self._walk_sequence(inner, depth + 1)
            elif vr == b"SQ" or (vr is None and enc.implicit and self._looks_like_sequence(length)):
                self._walk_defined_sequence(enc, depth + 1, self.fp.tell() + length, tag)
            else:
                self._skip(length, tag)

    def _looks_like_sequence(self, length: int) -> bool:
        # In implicit VR a defined-length sequence is only recognisable by its first item.
        if length < 8:
            return False
        pos = self.fp.tell()
        head = self.fp.read(4)
        self.fp.seek(pos)
        fmt = self.enc.endian + "HH"
        return len(head) == 4 and struct.unpack(fmt, head) == (0xFFFE, 0xE000)

    def _check_depth(self, depth: int) -> None:
        if depth > MAX_SEQUENCE_DEPTH:
            raise MalformedDataset(f"sequences nested deeper than {MAX_SEQUENCE_DEPTH} levels")

    def _walk_item(self, enc: _Encoding, depth: int, length: int) -> None:
        if length == _UNDEFINED:
            self.walk_dataset(enc, depth, None)
        else:
            end = self.fp.tell() + length
            if end > self.size:
                raise MalformedDataset(f"item length {length} runs past the end of the data")
            self.walk_dataset(enc, depth, end)

    def _walk_sequence(self, enc: _Encoding, depth: int) -> None:
        self._check_depth(depth)
        while True:
            tag, _, length = self._header(enc)
            if tag == _SEQUENCE_DELIMITER:
                return
            if tag != _ITEM:
                raise MalformedDataset(f"expected an item in a sequence at byte {self.fp.tell()}")
            self._walk_item(enc, depth, length)

    def _walk_defined_sequence(self, enc: _Encoding, depth: int, end: int, tag: int) -> None:
        self._check_depth(depth)
        if end > self.size:
            raise MalformedDataset(
                f"sequence ({tag >> 16:04X},{tag & 0xFFFF:04X}) runs past the end of the data"
            )
        while self.fp.tell() < end:
            item_tag, _, length = self._header(enc)
            if item_tag != _ITEM:
                raise MalformedDataset(f"expected an item in a sequence at byte {self.fp.tell()}")
            self._walk_item(enc, depth, length)
        if self.fp.tell() != end:
            raise MalformedDataset("sequence items overrun the sequence length")

    def _walk_fragments(self, enc: _Encoding) -> None:
        # Encapsulated pixel data: items of defined length, then a sequence delimiter (PS3.5 A.4).
        while True:
            tag, _, length = self._header(enc)
            if tag == _SEQUENCE_DELIMITER:
                return
            if tag != _ITEM or length == _UNDEFINED:
                raise MalformedDataset(f"bad encapsulated pixel data fragment at {self.fp.tell()}")
            self._skip(length, tag)


def _file_meta_end(fp: BinaryIO, size: int) -> int:
    """Offset just after the File Meta Information group (explicit VR LE, PS3.10 7.1)."""
    return _scan_file_meta(fp, size)[0]


def _scan_file_meta(fp: BinaryIO, size: int) -> tuple[int, str | None]:
    """The offset just after the File Meta Information group (explicit VR LE, PS3.10 7.1)
    and its Transfer Syntax UID (0002,0010) as text, ``None`` when absent."""
    transfer_syntax: str | None = None
    fp.seek(0)
    if size < 132 or fp.read(132)[128:132] != b"DICM":
        raise MalformedDataset("not a Part 10 file: no DICM prefix")
    walker = _Walker(fp, size, _Encoding(False, True))
    group_end: int | None = None
    while True:
        pos = fp.tell()
        if pos + 4 > size:
            return pos, transfer_syntax
        (group,) = struct.unpack("<H", fp.read(2))
        fp.seek(pos)
        if group != 0x0002:
            return pos, transfer_syntax
        if group_end is not None and pos >= group_end:
            # Past the length (0002,0000) announced: group 0002 elements inside the data
            # set, e.g. a C-STORE data set carrying a Transfer Syntax UID of its own that
            # would override the negotiated one (PS3.10 7.1, PS3.7 9.3.1.1).
            raise MalformedDataset(
                f"the data set holds group 0002 (File Meta) elements: byte {pos} is past "
                "the group length (0002,0000)"
            )
        tag, _, length = walker._header(walker.enc)
        if tag == 0x00020000 and length == 4 and group_end is None:
            (group_length,) = struct.unpack("<L", walker._read(4))
            group_end = fp.tell() + group_length
            continue
        if tag == 0x00020010 and length <= 128:
            transfer_syntax = walker._read(length).decode("ascii", errors="replace")
            continue
        walker._skip(length, tag)


def _walk(fp: BinaryIO, size: int, dataset_offset: int, ts: UID) -> int | None:
    implicit, little = encoding_of(ts)
    fp.seek(dataset_offset)
    walker = _Walker(fp, size, _Encoding(implicit, little))
    try:
        return walker.walk_dataset(walker.enc, 0, None)
    except MalformedDataset:
        if implicit or not little:
            raise
        # Lenient on read: some devices send implicit VR under an explicit VR
        # transfer syntax; pydicom reads such data sets, so do the walk too.
        fp.seek(dataset_offset)
        fallback = _Walker(fp, size, _Encoding(True, True))
        try:
            return fallback.walk_dataset(fallback.enc, 0, None)
        except MalformedDataset:
            pass
        raise


def _walk_deflated(path: Path, dataset_offset: int) -> int | None:
    """The structure walk of a deflated data set, streaming (memory stays flat): the
    offset of its top-level pixel data in the inflated bytes."""
    try:
        size = inflated_size(path, dataset_offset)
        with InflatingReader(path, dataset_offset) as reader:
            walker = _Walker(reader, size, _Encoding(False, True))  # type: ignore[arg-type]
            return walker.walk_dataset(walker.enc, 0, None)
    except DeflateError as exc:
        raise MalformedDataset(str(exc)) from exc


def _deflated_header(path: Path, dataset_offset: int, pixel_offset: int | None) -> FileDataset:
    """The header of a deflated file, inflating only the bytes before its pixel data
    (pydicom would inflate the whole data set in memory)."""
    with InflatingReader(path, dataset_offset) as reader:
        data = reader.read(-1 if pixel_offset is None else pixel_offset)
    meta = read_file_meta_info(path)
    dataset = read_dataset(BytesIO(data), is_implicit_VR=False, is_little_endian=True)
    header = FileDataset(str(path), dataset, preamble=None, file_meta=meta)
    header.set_original_encoding(False, True, dataset.original_character_set)
    return header


def read_received(path: Path) -> ReceivedFile:
    """Check the structure of a received Part 10 file and read its header.

    Raises :class:`MalformedDataset` when the bytes are truncated, lengths run
    past the data, items are malformed, or pydicom cannot parse the header.
    """
    try:
        return _read_received(path)
    except MalformedDataset:
        raise
    except Exception as exc:  # hostile bytes must never raise anything else (issue 6 fuzzing)
        raise MalformedDataset(f"cannot be read: {type(exc).__name__}: {exc}"[:500]) from exc


def _read_received(path: Path) -> ReceivedFile:
    size = path.stat().st_size
    with open(path, "rb", buffering=65536) as fp:
        dataset_offset, ts_text = _scan_file_meta(fp, size)
        fp.seek(132)
        meta_bytes = fp.read(dataset_offset - 132)
        ts = UID((ts_text or ImplicitVRLittleEndian).strip("\x00 "))
        # The structure is walked before pydicom parses anything, so that hostile lengths
        # and nesting (200 levels would exhaust pydicom's recursion) are refused first.
        if ts == DeflatedExplicitVRLittleEndian:
            # the whole data set is one deflate stream (PS3.5 A.5): walk it inflated
            pixel_offset = _walk_deflated(path, dataset_offset)
        else:
            pixel_offset = _walk(fp, size, dataset_offset, ts)
        fp.seek(0)
        try:
            if ts == DeflatedExplicitVRLittleEndian:
                header = _deflated_header(path, dataset_offset, pixel_offset)
            else:
                header = dcmread(fp, stop_before_pixels=True, force=True)
        except Exception as exc:  # pydicom raises many types on hostile bytes
            raise MalformedDataset(f"header cannot be parsed: {exc}") from exc
        file_meta = header.file_meta
    if ts == DeflatedExplicitVRLittleEndian and len(header) == 0 and size > dataset_offset:
        raise MalformedDataset("deflated data set cannot be inflated")
    if "SOPInstanceUID" not in header and "SOPClassUID" not in header and len(header) == 0:
        raise MalformedDataset("the data set is empty")
    return ReceivedFile(path, size, ts, dataset_offset, pixel_offset, header, file_meta, meta_bytes)


def file_meta_bytes(
    *,
    sop_class_uid: str,
    sop_instance_uid: str,
    transfer_syntax_uid: str,
    source_ae_title: str,
    receiving_ae_title: str,
    implementation_class_uid: str,
    implementation_version_name: str,
) -> bytes:
    """File Meta Information for a stored file (PS3.10 7.1), encoded.

    Group 0002 is always Explicit VR Little Endian, led by its File Meta Information
    Group Length (0002,0000). Source Application Entity Title (0002,0016) and Sending
    Application Entity Title (0002,0017) are the peer's calling AE title, Receiving
    Application Entity Title (0002,0018) is the node's. The UIDs must be valid already
    (``storage.uids.check_uid``); AE titles are cleaned to their VR here.

    Encoded directly rather than through pydicom's ``write_file_meta_info`` (same bytes,
    see tests/test_part10.py): it runs once per received instance.
    """
    elements: list[tuple[int, bytes, bytes]] = [
        (0x0001, b"OB", b"\x00\x01"),
        (0x0002, b"UI", _ui(sop_class_uid)),
        (0x0003, b"UI", _ui(sop_instance_uid)),
        (0x0010, b"UI", _ui(transfer_syntax_uid)),
        (0x0012, b"UI", _ui(implementation_class_uid)),
        (0x0013, b"SH", _text_value(implementation_version_name[:16])),
    ]
    source = _clean_ae(source_ae_title)
    if source:
        elements.append((0x0016, b"AE", _text_value(source)))
        elements.append((0x0017, b"AE", _text_value(source)))
    receiving = _clean_ae(receiving_ae_title)
    if receiving:
        elements.append((0x0018, b"AE", _text_value(receiving)))
    body = b"".join(
        struct.pack("<HH2sHL", 0x0002, element, vr, 0, len(value)) + value
        if vr in _LONG_VRS
        else struct.pack("<HH2sH", 0x0002, element, vr, len(value)) + value
        for element, vr, value in elements
    )
    return struct.pack("<HH2sHL", 0x0002, 0x0000, b"UL", 4, len(body)) + body


def _ui(uid: str) -> bytes:
    """A UI value: ASCII, padded to even length with one NUL (PS3.5 6.2, 9.1)."""
    raw = str(uid).encode("ascii")
    return raw + b"\x00" if len(raw) % 2 else raw


def _text_value(text: str) -> bytes:
    """An SH/AE value: ASCII, padded to even length with one space (PS3.5 6.2)."""
    raw = text.encode("ascii", errors="replace")
    return raw + b" " if len(raw) % 2 else raw


def _clean_ae(title: str) -> str:
    """An AE value valid for its VR (PS3.5 6.2: 16 chars, no backslash or controls)."""
    cleaned = "".join(c for c in title if " " <= c < "\x7f" and c != "\\").strip()
    return cleaned[:16]


def copy_range(src: BinaryIO, dst: BinaryIO, offset: int, count: int) -> None:
    """Copy ``count`` bytes of ``src`` from ``offset`` to ``dst``'s position, in the kernel."""
    dst.flush()
    src_fd, dst_fd = src.fileno(), dst.fileno()
    remaining = count
    pos = offset
    try:
        while remaining > 0:
            n = os.copy_file_range(src_fd, dst_fd, min(remaining, 1 << 30), pos)
            if n == 0:
                raise MalformedDataset("received file shrank while being stored")
            pos += n
            remaining -= n
    except OSError:
        src.seek(pos)
        while remaining > 0:
            chunk = src.read(min(remaining, _COPY_CHUNK))
            if not chunk:
                raise MalformedDataset("received file shrank while being stored") from None
            dst.write(chunk)
            remaining -= len(chunk)
        dst.flush()
        return
    dst.seek(0, os.SEEK_END)


def write_part10(
    dst: BinaryIO,
    meta: FileMetaDataset | bytes,
    received: ReceivedFile,
    header_bytes: bytes | None = None,
) -> None:
    """Write preamble, ``meta`` and the data set of ``received`` to ``dst``.

    Without ``header_bytes`` the data set bytes are the received ones.  With
    them, ``header_bytes`` (the re-encoded header, see ``storage.header_codec``)
    replace everything before the pixel data, and the pixel data onwards is
    copied unchanged; for a deflated data set (PS3.5 A.5) the header and the inflated
    bytes from the pixel data on are deflated again, streaming.
    """
    dst.write(b"\x00" * 128 + b"DICM")
    if isinstance(meta, bytes):
        dst.write(meta)  # already encoded (:func:`file_meta_bytes`)
    else:
        write_file_meta_info(dst, meta, enforce_standard=True)  # type: ignore[arg-type]
    if header_bytes is not None and received.transfer_syntax_uid == DeflatedExplicitVRLittleEndian:
        # the new header and the inflated bytes from the pixel data on, deflated again
        inflated_end = received.pixel_offset
        if inflated_end is None:
            inflated_end = inflated_size(received.path, received.dataset_offset)
        write_deflated(dst, header_bytes, received.path, received.dataset_offset, inflated_end)
        return
    if header_bytes is None:
        start = received.dataset_offset
    else:
        dst.write(header_bytes)
        start = received.pixel_offset if received.pixel_offset is not None else received.size
    with open(received.path, "rb") as src:
        copy_range(src, dst, start, received.size - start)
