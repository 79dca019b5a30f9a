"""The file a forward job sends, pinned so that a resend cannot pull it away.

Rule (documented in docs/operations.md): a job sends the **newest** version of its
instance, as indexed when its C-STORE starts.  The instance's row is read then (path,
original path and, for annotated copies, the verdict), and its file is pinned with a
hard link in the node's temporary folder (a copy where the filesystem has no hard
links): a resend that replaces the file while the C-STORE runs changes neither the
bytes on the wire nor the verdict that goes with them, and the file never disappears
under the sender.  If a resend replaced the file between the read and the pin, the
row is read again (at most :data:`PIN_ATTEMPTS` times).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.orm import Session, selectinload, sessionmaker

from scp.pipeline.model import PipelineResult
from scp.services.forwarding.egress import result_from_index, write_annotated
from storage.filestore import FileStore
from storage.models import Instance

#: Reads of the instance row before a missing file is an error.
PIN_ATTEMPTS = 5


@dataclass(frozen=True)
class _Version:
    path: Path
    result: PipelineResult | None


def _newest(
    sessions: sessionmaker[Session], store: FileStore, instance_id: int, send: str, annotate: bool
) -> _Version:
    with sessions() as session:
        options = [selectinload(Instance.findings), selectinload(Instance.actions)]
        inst = session.get(Instance, instance_id, options=options if annotate else [])
        if inst is None:
            raise FileNotFoundError(f"instance {instance_id} is no longer indexed")
        if send == "original" and inst.original_path:
            return _Version(store.original_path(inst.original_path), None)
        result = result_from_index(inst) if send != "original" and annotate else None
        return _Version(store.path(inst.path), result)


def _pin(src: Path, directory: Path) -> Path:
    """A new name in ``directory`` for the file ``src`` is now (hard link, else a copy
    from an open descriptor); raises FileNotFoundError when ``src`` is gone."""
    fd, name = tempfile.mkstemp(dir=directory, suffix=".pin")
    os.close(fd)
    pinned = Path(name)
    pinned.unlink()
    try:
        os.link(src, pinned)
    except FileNotFoundError:
        raise
    except OSError:  # no hard links here: copy what the descriptor holds
        with open(src, "rb") as fin, open(pinned, "wb") as fout:
            shutil.copyfileobj(fin, fout, 1 << 20)
    return pinned


@contextlib.contextmanager
def sendable_file(
    sessions: sessionmaker[Session],
    store: FileStore,
    instance_id: int,
    *,
    send: str,
    annotate: bool,
    on_unannotated: Callable[[Exception], None] | None = None,
) -> Iterator[Path]:
    """The file to C-STORE for ``instance_id``: its newest version, as received
    (``send = "original"``, or the stored file when the node changed nothing), or the
    stored file with the private verdict block (``annotate``); removed afterwards.

    Raises FileNotFoundError when the instance is no longer indexed, or its file stays
    missing over :data:`PIN_ATTEMPTS` reads of its row.  When the annotation itself fails,
    the stored file goes out as it is and ``on_unannotated`` is told why.
    """
    pinned: Path | None = None
    version: _Version | None = None
    for _ in range(PIN_ATTEMPTS):
        version = _newest(sessions, store, instance_id, send, annotate)
        with contextlib.suppress(FileNotFoundError):
            pinned = _pin(version.path, store.tmp)
            break
    if pinned is None or version is None:
        raise FileNotFoundError(f"{version.path if version else instance_id} is missing")
    try:
        if version.result is None:
            yield pinned
            return
        fd, name = tempfile.mkstemp(dir=store.tmp, suffix=".fwd")
        annotated = Path(name)
        try:
            source = annotated
            try:
                with os.fdopen(fd, "wb") as fh:
                    write_annotated(pinned, fh, version.result)
            except FileNotFoundError:
                raise  # the instance left the store: not an annotation fault
            except Exception as exc:  # the annotation failed: send what is stored
                if on_unannotated is not None:
                    on_unannotated(exc)
                source = pinned
            yield source
        finally:
            with contextlib.suppress(FileNotFoundError):
                annotated.unlink()
    finally:
        with contextlib.suppress(FileNotFoundError):
            pinned.unlink()
