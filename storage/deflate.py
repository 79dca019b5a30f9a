"""Deflated Explicit VR Little Endian (PS3.5 A.5) in flat memory.

The whole data set after the File Meta Information is one raw deflate stream (RFC 1951,
no zlib header). :class:`InflatingReader` reads it as a forward-only file of the inflated
bytes (for :mod:`storage.part10`'s structure walk, which seeks only forward and peeks a
few bytes back); :func:`inflated_size` counts those bytes; :func:`write_deflated` writes a
new header followed by the received inflated bytes from an offset on, deflated again.
Everything streams in :data:`CHUNK`-sized pieces: memory stays flat whatever the size.
"""

from __future__ import annotations

import os
import zlib
from pathlib import Path
from typing import BinaryIO

__all__ = ["CHUNK", "DeflateError", "InflatingReader", "inflated_size", "write_deflated"]

#: Bytes read from the file (and inflated output handed out) per step.
CHUNK = 1 << 20
#: Bytes kept behind the read position, so a reader can peek back (the walk peeks 4).
_KEEP = 64


class DeflateError(ValueError):
    """The deflate stream is corrupt or truncated (RFC 1951)."""


class InflatingReader:
    """The inflated bytes of ``path`` from ``offset`` on, as a forward-only binary file.

    ``read``, ``tell`` and ``seek`` (forward anywhere, backward by at most 64 bytes) are
    supported; reading past the end returns fewer bytes. Raises :class:`DeflateError`.
    """

    def __init__(self, path: Path, offset: int) -> None:
        self._src = open(path, "rb")  # noqa: SIM115 - closed by close() / the context manager
        self._src.seek(offset)
        self._inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        self._buffer = b""
        self._start = 0  # inflated offset of _buffer[0]
        self._pos = 0
        self._eof = False

    def __enter__(self) -> InflatingReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._src.close()

    def _more(self) -> bool:
        """Inflate the next piece into the buffer; ``False`` at the end of the stream."""
        while not self._eof and not self._inflater.eof:
            data = self._inflater.unconsumed_tail or self._src.read(CHUNK)
            if not data:
                self._eof = True
                raise DeflateError("the deflated data set is truncated")
            try:
                out = self._inflater.decompress(data, CHUNK)
            except zlib.error as exc:
                raise DeflateError(f"the deflated data set cannot be inflated: {exc}") from exc
            if out:
                drop = max(0, self._pos - self._start - _KEEP)
                self._buffer = self._buffer[drop:] + out
                self._start += drop
                return True
        return False

    def read(self, n: int = -1) -> bytes:
        out = bytearray()
        while n < 0 or len(out) < n:
            index = self._pos - self._start
            if index < len(self._buffer):
                available = len(self._buffer) - index
                want = available if n < 0 else min(n - len(out), available)
                out += self._buffer[index : index + want]
                self._pos += want
                continue
            if not self._more():
                break
        return bytes(out)

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        target = offset if whence == os.SEEK_SET else self._pos + offset
        if whence not in (os.SEEK_SET, os.SEEK_CUR):
            raise OSError("an inflating reader seeks from the start or the current position")
        if target < self._start:
            raise OSError("an inflating reader cannot seek that far back")
        while target > self._start + len(self._buffer):
            self._pos = self._start + len(self._buffer)
            if not self._more():
                break
        self._pos = min(target, self._start + len(self._buffer))
        return self._pos


def inflated_size(path: Path, offset: int) -> int:
    """Bytes of the inflated data set of ``path`` from ``offset``; :class:`DeflateError`."""
    with InflatingReader(path, offset) as reader:
        total = 0
        while chunk := reader.read(CHUNK):
            total += len(chunk)
        return total


def write_deflated(
    dst: BinaryIO, header_bytes: bytes, path: Path, offset: int, keep_from: int
) -> None:
    """Write ``header_bytes`` followed by the inflated data set of ``path`` (starting at
    file ``offset``) from inflated byte ``keep_from`` on, as one raw deflate stream."""
    deflater = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    dst.write(deflater.compress(header_bytes))
    with InflatingReader(path, offset) as reader:
        reader.seek(keep_from)
        while chunk := reader.read(CHUNK):
            dst.write(deflater.compress(chunk))
    dst.write(deflater.flush())
