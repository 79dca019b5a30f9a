"""WADO-RS: studies, series and instances from the stored files (PS3.18 10.4).

* Instances (PS3.18 10.4.1.1.1): each stored file as one part of a
  ``multipart/related; type="application/dicom"`` response, streamed from disk in the
  transfer syntax it is stored in; the node does not transcode, so an ``Accept`` asking
  for another transfer syntax is answered 406.
* Metadata (PS3.18 10.4.1.1.2): the header of each instance in the DICOM JSON model
  (PS3.18 F.2), read without its pixel data; Pixel Data (7FE0,0010) is given as a
  BulkDataURI (the instance's ``/bulkdata/7FE00010``, which serves its frames).
* Frames (PS3.18 10.4.1.1.3): native pixel data as ``application/octet-stream`` (Explicit
  VR Little Endian bytes, sliced from the file); encapsulated pixel data frame by frame in
  its own media type (``image/jpeg``, ``image/jp2``...), or ``application/octet-stream``
  with its ``transfer-syntax`` when the client accepts ``transfer-syntax=*``.

No HTTP framework: the HTTP layer passes the ``Accept`` header's text and streams the
chunks these functions yield. Errors: :class:`storage.queries.NotFound` (404),
:class:`NotAcceptable` (406), ``ValueError`` (400, e.g. a frame number out of range).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom import uid as pyuid
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from scp.services.dicomweb.multipart import OutPart, file_chunks, split_media_ranges
from storage.filestore import FileStore
from storage.models import Instance, Series, Study
from storage.part10 import encoding_of, read_received
from storage.queries import BadQuery, NotFound

#: Media type of a DICOM Part 10 file (PS3.18 8.7.3.2).
DICOM = "application/dicom"
OCTET_STREAM = "application/octet-stream"
#: Media types of encapsulated frames (PS3.18 Table 8.7.3-5), by transfer syntax.
IMAGE_MEDIA_TYPES: dict[str, str] = {
    pyuid.JPEGBaseline8Bit: "image/jpeg",
    pyuid.JPEGExtended12Bit: "image/jpeg",
    pyuid.JPEGLossless: "image/jpeg",
    pyuid.JPEGLosslessSV1: "image/jpeg",
    pyuid.JPEGLSLossless: "image/jls",
    pyuid.JPEGLSNearLossless: "image/jls",
    pyuid.JPEG2000Lossless: "image/jp2",
    pyuid.JPEG2000: "image/jp2",
    pyuid.RLELossless: "image/dicom-rle",
}
#: Transfer syntaxes whose native pixel bytes are those of Explicit VR Little Endian.
LITTLE_ENDIAN_NATIVE = frozenset(
    {
        pyuid.ExplicitVRLittleEndian,
        pyuid.ImplicitVRLittleEndian,
        pyuid.DeflatedExplicitVRLittleEndian,
    }
)


class NotAcceptable(Exception):
    """No representation the client accepts can be served (HTTP 406)."""


@dataclass(frozen=True)
class StoredInstance:
    """An indexed instance and its file."""

    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    path: Path
    number_of_frames: int | None

    def url(self, base_url: str) -> str:
        return (
            f"{base_url}/studies/{self.study_instance_uid}/series/{self.series_instance_uid}"
            f"/instances/{self.sop_instance_uid}"
        )


class WadoService:
    """Reads what WADO-RS serves from the index of ``sessions`` and the files of ``store``."""

    def __init__(self, sessions: sessionmaker[Session], store: FileStore) -> None:
        self.sessions = sessions
        self.store = store

    def instances(
        self, study: str, series: str | None = None, sop_instance: str | None = None
    ) -> list[StoredInstance]:
        """The instances of a study, series or one instance, in arrival order;
        :class:`NotFound` when none is indexed there."""
        stmt = (
            select(Instance, Series.series_instance_uid, Study.study_instance_uid)
            .join(Series, Instance.series_id == Series.id)
            .join(Study, Series.study_id == Study.id)
            .where(Study.study_instance_uid == study)
        )
        if series is not None:
            stmt = stmt.where(Series.series_instance_uid == series)
        if sop_instance is not None:
            stmt = stmt.where(Instance.sop_instance_uid == sop_instance)
        with self.sessions() as session:
            rows = session.execute(stmt.order_by(Instance.id)).all()
        if not rows:
            what = sop_instance or series or study
            raise NotFound(f"nothing stored under {what}")
        return [
            StoredInstance(
                study_uid,
                series_uid,
                inst.sop_instance_uid,
                inst.sop_class_uid,
                inst.transfer_syntax_uid,
                self.store.path(inst.path),
                inst.number_of_frames,
            )
            for inst, series_uid, study_uid in rows
        ]

    # -- instances -----------------------------------------------------------------------
    @staticmethod
    def negotiate_instances(accept: str, instances: Sequence[StoredInstance]) -> str:
        """The part media type for ``accept`` (``application/dicom; transfer-syntax=...``
        per part); raises :class:`NotAcceptable` when the client wants a transfer syntax
        an instance is not stored in, or no DICOM at all."""
        ranges = split_media_ranges(accept)
        if not ranges:
            return DICOM
        stored = {i.transfer_syntax_uid for i in instances}
        for media in ranges:
            if media.essence in ("*/*", "multipart/*"):
                return DICOM
            if media.essence != "multipart/related":
                continue
            if media.params.get("type", DICOM).lower() not in (DICOM, "*/*", "application/*"):
                continue
            wanted = media.params.get("transfer-syntax", "*")
            if wanted == "*" or stored == {wanted}:
                return DICOM
        raise NotAcceptable(
            "the instances can be served only as multipart/related; "
            f'type="application/dicom" in the transfer syntax they are stored in '
            f"({', '.join(sorted(stored))}); the node does not transcode"
        )

    @staticmethod
    def instance_parts(instances: Sequence[StoredInstance], base_url: str) -> Iterator[OutPart]:
        for inst in instances:
            yield OutPart(
                f"{DICOM}; transfer-syntax={inst.transfer_syntax_uid}",
                file_chunks(inst.path),
                inst.url(base_url),
            )

    # -- metadata ------------------------------------------------------------------------
    @staticmethod
    def metadata(instances: Sequence[StoredInstance], base_url: str) -> Iterator[dict[str, Any]]:
        """Each instance's header in the DICOM JSON model (PS3.18 F.2), pixel data as a
        BulkDataURI; one file read at a time."""
        for inst in instances:
            received = read_received(inst.path)  # the header only, read once
            ds = received.header
            out = _json(ds)
            if received.pixel_offset is not None:
                vr = "OW" if _native(inst.transfer_syntax_uid) and _bits(ds) > 8 else "OB"
                out["7FE00010"] = {
                    "vr": vr,
                    "BulkDataURI": f"{inst.url(base_url)}/bulkdata/7FE00010",
                }
            yield out

    # -- frames --------------------------------------------------------------------------
    @staticmethod
    def frame_parts(
        inst: StoredInstance, numbers: Sequence[int] | None, accept: str
    ) -> tuple[str, Iterator[OutPart]]:
        """The part media type and the parts of frames ``numbers`` (1-based; ``None``:
        every frame). Raises ``ValueError`` for a frame out of range or an instance
        without pixel data, :class:`NotAcceptable` for an ``Accept`` that cannot be met."""
        received = read_received(inst.path)
        if received.pixel_offset is None:
            raise BadQuery(f"instance {inst.sop_instance_uid} has no pixel data")
        header = received.header
        count = int(header.get("NumberOfFrames", 1) or 1)
        wanted = list(numbers) if numbers is not None else list(range(1, count + 1))
        bad = [n for n in wanted if not 1 <= n <= count]
        if bad:
            raise BadQuery(f"frame {bad[0]} is out of range (the instance has {count})")
        ts = str(received.transfer_syntax_uid)
        media = _frame_media_type(ts, accept)
        implicit, _ = encoding_of(received.transfer_syntax_uid)
        value_offset = received.pixel_offset + (8 if implicit else 12)
        if _native(ts):
            size = _frame_bytes(header)
            parts = (
                OutPart(media, file_chunks(inst.path, value_offset + (n - 1) * size, size))
                for n in wanted
            )
        else:
            parts = (
                OutPart(media, [frame])
                for frame in _encapsulated(inst.path, value_offset, count, wanted)
            )
        return media, parts


def _json(ds: Dataset) -> dict[str, Any]:
    """``ds`` in the DICOM JSON model; binary values inline (Base64), as pydicom writes them."""
    return ds.to_json_dict(bulk_data_threshold=2**31)


def _native(ts: str) -> bool:
    return not pyuid.UID(ts).is_compressed


def _bits(ds: Dataset) -> int:
    try:
        return int(ds.get("BitsAllocated", 8) or 8)
    except (TypeError, ValueError):
        return 8


def _frame_bytes(header: Dataset) -> int:
    """Bytes of one native frame: Rows x Columns x Samples per Pixel x Bits Allocated / 8
    (PS3.5 8.1.1); 1-bit frames are not served (their frames share bytes)."""
    rows = int(header.get("Rows", 0) or 0)
    columns = int(header.get("Columns", 0) or 0)
    samples = int(header.get("SamplesPerPixel", 1) or 1)
    bits = _bits(header)
    if bits % 8 or not rows or not columns:
        raise ValueError("frames of this pixel data cannot be sliced (Bits Allocated 1, no size)")
    return rows * columns * samples * math.ceil(bits / 8)


def _encapsulated(
    path: Path, value_offset: int, count: int, wanted: Sequence[int]
) -> Iterator[bytes]:
    """The requested frames of encapsulated pixel data (PS3.5 A.4). Frames asked for in
    increasing order go out one at a time as they are read; any other order is gathered
    first."""
    in_order = all(a < b for a, b in itertools.pairwise(wanted))
    keep = set(wanted)
    found: dict[int, bytes] = {}
    with open(path, "rb") as fh:
        fh.seek(value_offset)
        for number, frame in enumerate(generate_frames(fh, number_of_frames=count), start=1):
            if number in keep:
                if in_order:
                    yield frame
                    keep.discard(number)
                else:
                    found[number] = frame
            if number >= max(wanted):
                break
    if in_order:
        if keep:
            raise ValueError(f"frame {min(keep)} is missing from the encapsulated pixel data")
        return
    for number in wanted:
        if number not in found:
            raise ValueError(f"frame {number} is missing from the encapsulated pixel data")
        yield found[number]


def _frame_media_type(ts: str, accept: str) -> str:
    """The media type frames of transfer syntax ``ts`` go out in, for ``accept``."""
    native = _native(ts)
    image = IMAGE_MEDIA_TYPES.get(ts)
    ranges = split_media_ranges(accept)
    default = OCTET_STREAM if native else (image or f"{OCTET_STREAM}; transfer-syntax={ts}")
    if native and ts not in LITTLE_ENDIAN_NATIVE:
        default = ""  # big-endian bytes are not those of application/octet-stream
    for media in ranges or []:
        if media.essence in ("*/*", "multipart/*"):
            if default:
                return default
            continue
        if media.essence != "multipart/related":
            continue
        kind = media.params.get("type", OCTET_STREAM).lower()
        wanted = media.params.get("transfer-syntax")
        if kind in ("*/*", OCTET_STREAM):
            if (
                native
                and ts in LITTLE_ENDIAN_NATIVE
                and wanted in (None, "*", pyuid.ExplicitVRLittleEndian)
            ):
                return OCTET_STREAM
            if wanted == "*" or wanted == ts:
                return f"{OCTET_STREAM}; transfer-syntax={ts}"
            if kind == "*/*" and image and wanted is None:
                return image
        elif image and kind == image and wanted in (None, "*", ts):
            return f"{image}; transfer-syntax={ts}"
    if not ranges and default:
        return default
    raise NotAcceptable(
        f"frames stored in {ts} can be served as "
        + (OCTET_STREAM if native else f"{image or OCTET_STREAM} (transfer-syntax={ts})")
        + " only; the node does not transcode"
    )
