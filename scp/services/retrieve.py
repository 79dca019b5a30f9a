"""The Retrieve SCP over the store: C-MOVE and C-GET (PS3.4 C.4.2, C.4.3).

Study Root and Patient Root Query/Retrieve Information Models - MOVE and GET (PS3.4
C.6.1, C.6.2), levels PATIENT (Patient Root only), STUDY, SERIES and IMAGE.  The
identifier (PS3.4 C.4.2.1.4.1) names the unique key of its level -- Patient ID
(0010,0020), Study Instance UID (0020,000D), Series Instance UID (0020,000E) or SOP
Instance UID (0008,0018), a single value or a list of UIDs -- and may name unique keys of
the levels above (they then restrict the match too; relational retrieval without them is
accepted, PS3.4 C.4.2.2.1).  Every other key is ignored.

:meth:`RetrieveService.instances` lists the stored instances to send, in series and
instance order, as :class:`StoredInstance` s: no data set is read, so memory stays flat
however large the study.  The network layer sends each one from its file in its stored
transfer syntax (the node's corrections and edit record are in the stored file); when the
peer accepted the SOP class only in another syntax, :func:`what_to_send` re-encodes it
between the uncompressed little-endian syntaxes or decompresses a losslessly compressed
one -- anything else is a failed sub-operation.

No network code: the C-MOVE/C-GET handlers are in :mod:`scp.net.retrieve`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom import uid as pyuid
from pydicom.dataset import Dataset
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from scp import status
from scp.services.find.errors import FindError, quoted
from scp.services.find.identifier import query_level
from scp.services.find.keys import MODEL_LEVELS, UNIQUE_KEYS, Level, Model, tag_of
from scp.services.forwarding.contexts import (
    FALLBACK_TRANSFER_SYNTAXES,
    MAX_CONTEXTS,
    NATIVE_LITTLE_ENDIAN,
)
from storage.filestore import FileStore
from storage.models import Instance, Series, Study

log = logging.getLogger("spacing_scp.retrieve")

#: Compressed transfer syntaxes pydicom decodes without loss (PS3.5 A.4, A.5, 8.2).
LOSSLESS_COMPRESSED: frozenset[str] = frozenset(
    {
        pyuid.RLELossless,
        pyuid.JPEGLossless,
        pyuid.JPEGLosslessSV1,
        pyuid.JPEGLSLossless,
        pyuid.JPEG2000Lossless,
        pyuid.HTJ2KLossless,
        pyuid.HTJ2KLosslessRPCL,
    }
)

#: Most sub-operations one request may have: the Number of ... Sub-operations are US.
MAX_SUBOPERATIONS = 65535

_COLUMNS = {
    "PatientID": Study.patient_id,
    "StudyInstanceUID": Study.study_instance_uid,
    "SeriesInstanceUID": Series.series_instance_uid,
    "SOPInstanceUID": Instance.sop_instance_uid,
}


class RetrieveError(FindError):
    """A C-MOVE/C-GET request the node refuses (0xA900, 0xA701, 0xC000); the Error
    Comment fits LO (64 characters)."""


@dataclass(frozen=True)
class StoredInstance:
    """One instance to send: its UIDs, stored transfer syntax and absolute file path."""

    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax_uid: str
    path: Path


@dataclass
class RetrieveRequest:
    """A checked identifier: the level and the unique key values to match."""

    level: Level
    model: Model
    #: Unique key keyword -> the values (any of them matches).
    keys: dict[str, list[str]] = field(default_factory=dict)


def _values(ds: Dataset, keyword: str) -> list[str]:
    elem = ds.get(keyword)
    if elem is None:
        return []
    value = elem
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    if isinstance(value, str):
        parts = value.split("\\")
    elif isinstance(value, list | tuple) or hasattr(value, "__iter__"):
        parts = [str(v) for v in value]
    else:
        parts = [str(value)]
    return [p.strip(" \x00") for p in parts if p.strip(" \x00")]


def parse_retrieve(ds: Dataset, model: Model) -> RetrieveRequest:
    """Check a C-MOVE/C-GET identifier (PS3.4 C.4.2.1.4.1, C.4.3.1.3.1).

    Raises :class:`RetrieveError` 0xA900 for a missing or unknown level, a missing or
    empty unique key of the level, or a wild card in a unique key.
    """
    bad = status.FIND_ERROR_IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS
    try:
        level = query_level(ds, model)
    except FindError as err:
        raise RetrieveError(err.code, err.comment, err.tag) from None
    request = RetrieveRequest(level=level, model=model)
    levels = MODEL_LEVELS[model]
    for upper in levels[: levels.index(level) + 1]:
        keyword = UNIQUE_KEYS[upper]
        tag = int(tag_of(keyword))
        try:
            values = _values(ds, keyword)
        except Exception:
            raise RetrieveError(bad, f"{keyword}: the value cannot be read", tag) from None
        if any("*" in v or "?" in v for v in values):
            raise RetrieveError(bad, quoted(f"{keyword}: no wild cards here: ", values[0]), tag)
        if values:
            request.keys[keyword] = values
        elif upper == level:
            raise RetrieveError(bad, f"{level} retrieve needs {keyword} (PS3.4 C.4.2.1.4)", tag)
    return request


class RetrieveService:
    """Lists the stored instances a C-MOVE/C-GET identifier names."""

    def __init__(self, sessions: sessionmaker[Session], store: FileStore) -> None:
        self.sessions = sessions
        self.store = store

    def instances(self, identifier: Dataset, model: Model) -> list[StoredInstance]:
        """The instances to send, ordered by series then instance; raises
        :class:`RetrieveError` (0xA900 bad identifier, 0xA701 more than 65535 matches)."""
        request = parse_retrieve(identifier, model)
        stmt: Any = (
            select(
                Instance.sop_class_uid,
                Instance.sop_instance_uid,
                Instance.transfer_syntax_uid,
                Instance.path,
            )
            .join(Series, Instance.series_id == Series.id)
            .join(Study, Series.study_id == Study.id)
        )
        for keyword, values in request.keys.items():
            stmt = stmt.where(_COLUMNS[keyword].in_(values))
        stmt = stmt.order_by(Series.id, Instance.id).limit(MAX_SUBOPERATIONS + 1)
        with self.sessions() as session:
            rows = session.execute(stmt).all()
        if len(rows) > MAX_SUBOPERATIONS:
            raise RetrieveError(
                status.RETRIEVE_REFUSED_TOO_MANY_MATCHES,
                f"more than {MAX_SUBOPERATIONS} instances: retrieve less at once",
            )
        return [
            StoredInstance(sop_class, sop, ts, self.store.path(path))
            for sop_class, sop, ts, path in rows
        ]


def proposed_contexts(instances: Sequence[StoredInstance]) -> list[tuple[str, list[str]]]:
    """Presentation contexts to propose to a move destination (PS3.8 9.3.2.2): per SOP
    class its stored syntaxes each alone, then the uncompressed fallbacks; at most 128
    (one context per SOP class with every syntax once more would be needed)."""
    exact: dict[tuple[str, str], None] = {}
    classes: dict[str, None] = {}
    for inst in instances:
        exact[(inst.sop_class_uid, inst.transfer_syntax_uid)] = None
        classes[inst.sop_class_uid] = None
    contexts = [(sop, [ts]) for sop, ts in exact]
    contexts += [(sop, list(FALLBACK_TRANSFER_SYNTAXES)) for sop in classes]
    if len(contexts) <= MAX_CONTEXTS:
        return contexts
    merged: dict[str, list[str]] = {}
    for sop, ts in exact:
        merged.setdefault(sop, [])
        if ts not in merged[sop]:
            merged[sop].append(ts)
    for syntaxes in merged.values():
        syntaxes += [t for t in FALLBACK_TRANSFER_SYNTAXES if t not in syntaxes]
    return list(merged.items())[:MAX_CONTEXTS]


def what_to_send(instance: StoredInstance, accepted: Sequence[str]) -> Path | Dataset:
    """The stored file (streamed as is) when the peer accepted its transfer syntax for its
    SOP class; else a data set it can be encoded in: re-encoded between the uncompressed
    little-endian syntaxes, or a losslessly compressed one decompressed.

    ``accepted``: the transfer syntaxes the peer accepted for the instance's SOP class.
    Raises ``ValueError`` when there is none it can go in (a failed sub-operation).
    """
    stored = instance.transfer_syntax_uid
    if stored in accepted:
        return instance.path
    native = [ts for ts in accepted if ts in NATIVE_LITTLE_ENDIAN]
    if not native or (stored not in NATIVE_LITTLE_ENDIAN and stored not in LOSSLESS_COMPRESSED):
        raise ValueError(
            f"{instance.sop_instance_uid}: stored in {pyuid.UID(stored).name}, the peer "
            f"accepted {', '.join(pyuid.UID(t).name for t in accepted) or 'nothing'} "
            "for its SOP class and no lossless transcoding leads there"
        )
    ds = dcmread(instance.path)
    if stored in LOSSLESS_COMPRESSED:
        # the same instance, only decoded: pydicom would otherwise mint a new SOP
        # Instance UID; raises when no pixel data handler can decode it
        ds.decompress(generate_instance_uid=False)
    return ds  # the network layer encodes it in the accepted uncompressed syntax
