"""The received-data-set part of :mod:`scp.net.compat`: pynetdicom's private names used
while a C-STORE data set arrives (its File Meta, its write errors, the UIDs of the DIMSE
primitives), behind the same version check; :mod:`scp.net.compat` re-exports every name,
and ``tests/test_compat.py`` has one contract test per name.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable
from typing import Any, NamedTuple

from pynetdicom import dimse_messages, dimse_primitives
from pynetdicom.association import Association


def _supported() -> bool:
    from scp.net.compat import supported

    return supported()


# -- received data sets: the File Meta written while they arrive ------------------------------

#: ``writer(assoc, sop_class_uid, sop_instance_uid, transfer_syntax_uid) -> bytes``: the
#: encoded File Meta Information group (PS3.10 7.1, no preamble) of a data set received
#: on ``assoc``, from the C-STORE-RQ's Affected SOP Class/Instance UID and the accepted
#: presentation context's transfer syntax.
FileMetaWriter = Callable[[Association, str, str, str], bytes]

_meta_writer: FileMetaWriter | None = None
_decoding = threading.local()


class _FileMetaRequest(NamedTuple):
    """The arguments pynetdicom's ``decode_msg`` gives ``create_file_meta`` (same names)."""

    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax: str


_FILE_META_ARGUMENTS = frozenset(_FileMetaRequest._fields)


def write_received_file_meta(writer: FileMetaWriter | None) -> None:
    """Let the node write the File Meta of each data set received to a file.

    With :func:`receive_data_sets_to_files`, pynetdicom writes preamble, its own File Meta
    (its implementation UID, no AE titles) and then the data set fragments as they arrive.
    After this call (process-wide; ``None`` restores pynetdicom's meta) it writes the
    bytes ``writer`` returns instead, so that the received file already is the file the
    node stores and can be renamed into place rather than copied. If ``writer`` raises,
    pynetdicom's own meta is written (the node then writes its stored file as before).
    Nothing changes outside :func:`supported`.
    """
    global _meta_writer
    if not _supported():
        _meta_writer = None
        return
    _meta_writer = writer
    message_class = dimse_messages.DIMSEMessage
    if getattr(message_class.decode_msg, "_tracks_association", False):
        return
    decode_msg = message_class.decode_msg
    create_file_meta = dimse_messages.create_file_meta
    write_file_meta_info = dimse_messages.write_file_meta_info

    def tracking_decode_msg(self: Any, primitive: Any, assoc: Any = None) -> bool:
        _decoding.assoc = assoc
        try:
            return bool(decode_msg(self, primitive, assoc))
        finally:
            _decoding.assoc = None

    def node_create_file_meta(**kwargs: Any) -> Any:
        if _meta_writer is None or set(kwargs) != _FILE_META_ARGUMENTS:
            return create_file_meta(**kwargs)
        return _FileMetaRequest(*(str(kwargs[name]) for name in _FileMetaRequest._fields))

    def node_write_file_meta_info(fp: Any, meta: Any, *args: Any, **kwargs: Any) -> None:
        if not isinstance(meta, _FileMetaRequest):
            write_file_meta_info(fp, meta, *args, **kwargs)
            return
        writer = _meta_writer
        assoc = getattr(_decoding, "assoc", None)
        try:
            if writer is None or assoc is None:
                raise LookupError("no File Meta writer for this association")
            encoded = writer(assoc, *meta)
        except Exception:
            encoded = None
        if encoded is None:
            write_file_meta_info(fp, create_file_meta(**meta._asdict()))
        else:
            fp.write(encoded)

    tracking_decode_msg._tracks_association = True  # type: ignore[attr-defined]
    message_class.decode_msg = tracking_decode_msg  # type: ignore[method-assign]
    dimse_messages.create_file_meta = node_create_file_meta
    dimse_messages.write_file_meta_info = node_write_file_meta_info  # type: ignore[assignment]


_receive_errors: dict[str, OSError] = {}
_receive_errors_lock = threading.Lock()


class _ReceiveFile:
    """pynetdicom's temporary file of a C-STORE data set being received, holding back a
    write error: the rest of the message's bytes are dropped, the file is emptied (its
    space given back) and the error is kept for :func:`receive_error`."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.name: str = inner.name
        self.error: OSError | None = None
        self.file = self  # pynetdicom flushes through ``.file``

    def write(self, data: bytes) -> int:
        if self.error is None:
            try:
                return int(self._inner.write(data))
            except OSError as exc:
                self._failed(exc)
        return len(data)

    def flush(self) -> None:
        if self.error is None:
            try:
                self._inner.file.flush()
            except OSError as exc:
                self._failed(exc)

    def close(self) -> None:
        try:
            self._inner.close()
        except OSError:
            if self.error is None:
                raise

    def fileno(self) -> int:
        return int(self._inner.fileno())

    def _failed(self, exc: OSError) -> None:
        self.error = exc
        with _receive_errors_lock:
            _receive_errors[self.name] = exc
        with contextlib.suppress(OSError, ValueError, AttributeError):
            os.ftruncate(self._inner.fileno(), 0)


def hold_back_write_errors() -> None:
    """A write error (a full disk: ENOSPC, EDQUOT; or EIO) while pynetdicom writes a
    received data set to its file (:func:`receive_data_sets_to_files`) no longer ends the
    association with an A-ABORT: the message is received to its end, its file emptied,
    and the ``EVT_C_STORE`` handler, asking :func:`receive_error`, answers a failure
    status (PS3.4 B.2.3: 0xA700 for a full disk) that the sender can act on. Idempotent,
    process-wide; nothing changes outside :func:`supported`."""
    if not _supported():
        return
    current = dimse_messages.NamedTemporaryFile
    if getattr(current, "_holds_back", False):
        return

    def receive_file(*args: Any, **kwargs: Any) -> Any:
        return _ReceiveFile(current(*args, **kwargs))

    receive_file._holds_back = True  # type: ignore[attr-defined]
    dimse_messages.NamedTemporaryFile = receive_file


def receive_error(path: str | os.PathLike[str]) -> OSError | None:
    """The write error :func:`hold_back_write_errors` held back for the data set file at
    ``path`` (forgotten once asked), or ``None``."""
    with _receive_errors_lock:
        return _receive_errors.pop(os.fspath(path), None)


#: Validated UIDs :func:`remember_valid_uids` keeps (the set is emptied when full).
VALID_UIDS_KEPT = 4096


def remember_valid_uids() -> None:
    """Validate each UID of a DIMSE primitive once.

    pynetdicom validates a UID (pydicom's UID checks and its own) every time one is set on
    a DIMSE primitive: decoding a C-STORE-RQ sets Affected SOP Class/Instance UID, and the
    C-STORE-RSP copies both from it, so each UID of each instance is validated twice or
    more. After this call (idempotent, process-wide) a UID that passed validation is not
    validated again while it is among the last :data:`VALID_UIDS_KEPT`; a UID that failed
    is validated (and fails) each time. Nothing changes outside :func:`supported`.
    """
    if not _supported():
        return
    current = dimse_primitives.set_uid
    if getattr(current, "_remembers", False):
        return
    valid: dict[str, Any] = {}

    def set_uid(
        value: Any,
        name: str,
        allow_empty: bool = True,
        allow_none: bool = True,
        validate: bool = True,
    ) -> Any:
        if validate and isinstance(value, str) and value:
            known = valid.get(value)
            if known is not None:
                return known
        uid = current(value, name, allow_empty, allow_none, validate)
        if validate and isinstance(value, str) and uid:
            if len(valid) >= VALID_UIDS_KEPT:
                valid.clear()
            valid[value] = uid
        return uid

    set_uid._remembers = True  # type: ignore[attr-defined]
    dimse_primitives.set_uid = set_uid
