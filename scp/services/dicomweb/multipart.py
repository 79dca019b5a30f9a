"""Streaming ``multipart/related`` bodies, both ways (RFC 2387, RFC 2046 5.1; PS3.18 8.6.1.2).

:class:`PartWriter` is a push parser: the HTTP layer feeds it the request body chunk by
chunk and it writes each part's content to its own file, so a STOW-RS body of any size
never sits in memory (at most one chunk plus a boundary's length is buffered).
:func:`multipart_stream` is the other direction: WADO-RS responses written from files.

No HTTP framework here: bytes in, files out.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

#: Longest header block of one part (bytes); longer is a malformed body.
MAX_PART_HEADER_BYTES = 16 * 1024
#: Bytes read from a file per chunk when streaming a response.
CHUNK_BYTES = 1024 * 1024


class MultipartError(ValueError):
    """The body is not the ``multipart/related`` message it says it is (HTTP 400)."""


class PartTooLarge(MultipartError):
    """A part is larger than the configured limit (HTTP 413)."""


@dataclass(frozen=True)
class MediaType:
    """A parsed media type: ``type/subtype`` in lower case and its parameters (names in
    lower case, values unquoted)."""

    essence: str
    params: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> MediaType:
        parts = _split_params(text)
        essence = parts[0].strip().lower() if parts else ""
        params: dict[str, str] = {}
        for item in parts[1:]:
            name, sep, value = item.partition("=")
            if not sep:
                continue
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1].replace('\\"', '"')
            params[name.strip().lower()] = value
        return cls(essence, params)


def _split_params(text: str, separator: str = ";") -> list[str]:
    """Split on ``separator`` outside quoted strings."""
    out: list[str] = []
    current: list[str] = []
    quoted = False
    for ch in text:
        if ch == '"':
            quoted = not quoted
        if ch == separator and not quoted:
            out.append("".join(current))
            current = []
        else:
            current.append(ch)
    out.append("".join(current))
    return out


def split_media_ranges(header: str) -> list[MediaType]:
    """An ``Accept`` header's media ranges (RFC 9110 12.5.1), commas inside quotes kept."""
    return [MediaType.parse(r) for r in _split_params(header, ",") if r.strip()]


@dataclass(frozen=True)
class Part:
    """One part of a received body: its file, its Content-Type (``""`` when absent), size."""

    path: Path
    content_type: str
    size: int


class PartWriter:
    """Writes the parts of one ``multipart/related`` body to files in ``directory``.

    ``feed`` the body's chunks, then ``finish`` for the parts; ``discard`` removes every
    file written (also after an error). Raises :class:`MultipartError` for a body that
    does not follow RFC 2046 5.1.1 (no opening delimiter, a part's headers too long or
    unterminated, no closing delimiter: a body cut short) and :class:`PartTooLarge` for a
    part over ``max_part_bytes`` (0: no limit).
    """

    def __init__(self, boundary: str, directory: Path, max_part_bytes: int = 0) -> None:
        if not boundary or len(boundary) > 70:
            raise MultipartError("the boundary parameter must have 1 to 70 characters")
        self._delimiter = b"\r\n--" + boundary.encode("latin-1")
        self._directory = directory
        self._max = max_part_bytes
        # A CRLF in front lets the first delimiter (which has none) be found like the others.
        self._buffer = bytearray(b"\r\n")
        self._state = "preamble"
        self._file: BinaryIO | None = None
        self._current: tuple[Path, str, int] | None = None
        self.parts: list[Part] = []
        self._paths: list[Path] = []

    # -- feeding ---------------------------------------------------------------------------
    def feed(self, data: bytes) -> None:
        self._buffer += data
        while self._step():
            pass

    def _step(self) -> bool:
        """Consume what the buffer allows; ``True`` when another step may progress."""
        buf = self._buffer
        if self._state == "preamble":
            at = buf.find(self._delimiter)
            if at < 0:
                keep = len(self._delimiter) - 1
                if len(buf) > keep:
                    del buf[: len(buf) - keep]
                return False
            del buf[: at + len(self._delimiter)]
            self._state = "after_delimiter"
            return True
        if self._state == "after_delimiter":
            if len(buf) < 2:
                return False
            if buf[:2] == b"--":
                self._state = "epilogue"
                buf.clear()
                return False
            end = buf.find(b"\r\n")
            if end < 0:
                if len(buf) > 1024:
                    raise MultipartError("a delimiter line is not terminated by CRLF")
                return False
            if buf[:end].strip(b" \t"):
                raise MultipartError("unexpected characters after a boundary delimiter")
            del buf[: end + 2]
            self._state = "headers"
            return True
        if self._state == "headers":
            end = buf.find(b"\r\n\r\n")
            if buf[:2] == b"\r\n":
                end = -2  # no header fields at all
            if end == -1:
                if len(buf) > MAX_PART_HEADER_BYTES:
                    raise MultipartError("a part's header fields are too long or unterminated")
                return False
            block = bytes(buf[: max(end, 0)])
            del buf[: (end + 4) if end >= 0 else 2]
            self._open_part(_content_type(block))
            self._state = "body"
            return True
        if self._state == "body":
            at = buf.find(self._delimiter)
            if at < 0:
                safe = len(buf) - (len(self._delimiter) - 1)
                if safe > 0:
                    self._write(bytes(buf[:safe]))
                    del buf[:safe]
                return False
            self._write(bytes(buf[:at]))
            del buf[: at + len(self._delimiter)]
            self._close_part()
            self._state = "after_delimiter"
            return True
        buf.clear()  # epilogue: ignored (RFC 2046 5.1.1)
        return False

    def _open_part(self, content_type: str) -> None:
        fd, name = tempfile.mkstemp(
            dir=self._directory, prefix=f"stow-{secrets.token_hex(4)}-", suffix=".part"
        )
        path = Path(name)
        self._paths.append(path)
        self._file = os.fdopen(fd, "wb")
        self._current = (path, content_type, 0)

    def _write(self, data: bytes) -> None:
        if not data:
            return
        assert self._file is not None and self._current is not None
        path, content_type, size = self._current
        size += len(data)
        if self._max and size > self._max:
            raise PartTooLarge(f"a part is larger than the limit of {self._max} bytes")
        self._file.write(data)
        self._current = (path, content_type, size)

    def _close_part(self) -> None:
        assert self._file is not None and self._current is not None
        self._file.close()
        self._file = None
        self.parts.append(Part(*self._current))
        self._current = None

    # -- the end -------------------------------------------------------------------------
    def finish(self) -> list[Part]:
        """The parts, once the closing delimiter was seen; raises :class:`MultipartError`
        for a body that ended before it."""
        if self._state == "preamble":
            raise MultipartError("the body has no part (no boundary delimiter found)")
        if self._state != "epilogue":
            raise MultipartError("the body ended before its closing boundary delimiter")
        return list(self.parts)

    def discard(self) -> None:
        """Remove every file this writer created."""
        if self._file is not None:
            self._file.close()
            self._file = None
        for path in self._paths:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


def _content_type(block: bytes) -> str:
    for line in block.split(b"\r\n"):
        name, sep, value = line.partition(b":")
        if sep and name.strip().lower() == b"content-type":
            return value.strip().decode("latin-1")
    return ""


# -- responses ------------------------------------------------------------------------------


def new_boundary() -> str:
    return f"spacing-scp-{secrets.token_hex(12)}"


@dataclass(frozen=True)
class OutPart:
    """A response part: its Content-Type, and its content as chunks (read lazily)."""

    content_type: str
    chunks: Iterable[bytes]
    location: str = ""


def multipart_stream(parts: Iterable[OutPart], boundary: str) -> Iterator[bytes]:
    """The body of a ``multipart/related`` response, part by part (RFC 2046 5.1.1)."""
    for part in parts:
        head = f"--{boundary}\r\nContent-Type: {part.content_type}\r\n"
        if part.location:
            head += f"Content-Location: {part.location}\r\n"
        yield (head + "\r\n").encode("latin-1")
        yield from part.chunks
        yield b"\r\n"
    yield f"--{boundary}--\r\n".encode("latin-1")


def file_chunks(path: Path, offset: int = 0, length: int | None = None) -> Iterator[bytes]:
    """``length`` bytes of ``path`` from ``offset`` (to the end when ``None``), in chunks."""
    with open(path, "rb") as fh:
        fh.seek(offset)
        left = length
        while left is None or left > 0:
            data = fh.read(CHUNK_BYTES if left is None else min(CHUNK_BYTES, left))
            if not data:
                if left:
                    raise OSError(f"{path} ended {left} bytes early")
                return
            if left is not None:
                left -= len(data)
            yield data
