"""From a received file to a stored, indexed instance and a DIMSE status.

This is the C-STORE handler's work without the network: check the bytes,
run the spacing pipeline, apply its edits by a streaming rewrite, store
durably, index, and only then answer Success (PS3.4 B.2.3).  Any failure
after the file was placed undoes it, so nothing partial is left behind.
"""

from __future__ import annotations

import errno
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from scp import __version__, status
from scp.pipeline import ALREADY_CORRECTED
from scp.pipeline.compare import decimals_of
from scp.pipeline.model import InstanceContext, PipelineResult, Severity
from scp.pipeline.policy import SpacingPolicy
from scp.pipeline.raw import raw_text
from scp.series import DEFAULT_TOLERANCE, Tolerance
from scp.services.decisions import edited_slices, header_view, rewrite, run_decisions
from scp.services.header_fields import header_text as _text
from scp.services.header_fields import series_fields
from scp.services.indexer import JournalItem
from scp.services.indexing import InstanceEntry, index_instance
from storage.db import write_session
from storage.filestore import FileStore, PendingFile
from storage.index import ActionRow, FindingRow, IndexedInstance
from storage.journal import JournalWriter
from storage.part10 import (
    MalformedDataset,
    ReceivedFile,
    file_meta_bytes,
    read_received,
    write_part10,
)
from storage.uids import InvalidUID, check_uid, normalize_uid

log = logging.getLogger("spacing_scp.ingest")

#: Attempts of the index transaction (a unique-key race or a deadlock is retried).
INDEX_ATTEMPTS = 3

#: Implementation Class UID of the node (PS3.7 D.3.3.2), under the pydicom-derived root
#: ``1.2.826.0.1.3680043.8.498`` reserved for applications built with pydicom.
IMPLEMENTATION_CLASS_UID = "1.2.826.0.1.3680043.8.498.90210.1"
IMPLEMENTATION_VERSION_NAME = f"SPACING_SCP_{__version__}".replace(".", "")[:16]


@dataclass(frozen=True)
class Received:
    """A C-STORE request as the handler saw it."""

    path: Path
    sop_class_uid: str
    sop_instance_uid: str
    calling_ae_title: str = ""
    called_ae_title: str = ""
    peer_address: str | None = None
    #: Writing the received data set to ``path`` failed (the disk filled up while it
    #: arrived): the file is incomplete and the instance is refused.
    receive_error: OSError | None = None


@dataclass
class Outcome:
    """What became of one instance."""

    status: int
    sop_instance_uid: str
    comment: str | None = None
    resend: bool = False
    stored_path: Path | None = None
    result: PipelineResult | None = None
    milliseconds: float = 0.0
    #: The received file was renamed into place (not copied): see ``FileStore.put_received``.
    renamed: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def stored(self) -> bool:
        return status.is_stored(self.status)


def _raw(ds: Dataset, keyword: str) -> str | None:
    """An element's text exactly as received (rule 4 padding aside), at most 255 chars."""
    text = raw_text(ds, keyword)
    return None if text is None else text[:255]


def _int(ds: Dataset, keyword: str) -> int | None:
    try:
        value = ds.get(keyword)
        return int(value) if value not in (None, "") else None
    except Exception:
        return None


def _float(ds: Dataset, keyword: str) -> float | None:
    try:
        value = ds.get(keyword)
        return float(value) if value not in (None, "") else None
    except Exception:
        return None


class Ingestor:
    """Stores received instances; one per process, shared by all associations."""

    def __init__(
        self,
        store: FileStore,
        sessions: sessionmaker[Session],
        *,
        ae_title: str,
        policy: SpacingPolicy,
        min_free_bytes: int = 0,
        max_instance_bytes: int = 0,
        tolerance: Tolerance = DEFAULT_TOLERANCE,
    ) -> None:
        self.store = store
        self.sessions = sessions
        self.ae_title = ae_title
        self.policy = policy
        self.min_free_bytes = min_free_bytes
        self.max_instance_bytes = max_instance_bytes
        self.tolerance = tolerance
        #: The ingest journal (:mod:`storage.journal`): when set, Success waits only for the
        #: file and its journal record; the :class:`scp.services.indexer.Indexer` indexes it
        #: beside the receive path.  ``None``: indexed before the answer (``inline``).
        self.journal: JournalWriter | None = None
        #: Called inside the transaction that indexes an instance (forwarding queues its
        #: jobs there, so an instance answered Success always has them).
        self.on_indexed: (
            Callable[[Session, IndexedInstance, InstanceEntry, PipelineResult], None] | None
        ) = None
        #: Retention (issue 20): called when a receive finds the free space below
        #: ``low_space_bytes`` (the retention watermark), to run the pass early; set where
        #: the pass runs in this process.
        self.on_low_space: Callable[[], None] | None = None
        self.low_space_bytes = 0

    def ingest(self, rcv: Received) -> Outcome:
        started = time.perf_counter()
        outcome = self._ingest(rcv)
        outcome.milliseconds = (time.perf_counter() - started) * 1000
        return outcome

    def _fail(self, rcv: Received, code: int, comment: str) -> Outcome:
        return Outcome(code, normalize_uid(rcv.sop_instance_uid), comment=comment[:1024])

    def _write_failed(self, rcv: Received, exc: BaseException, step: str) -> Outcome:
        """A write that failed: 0xA700 Refused: Out of Resources when the disk is full
        (PS3.4 B.2.3; the sender keeps the instance and tries again), 0x0110 otherwise."""
        if out_of_space(exc):
            log.error("data directory full while %s for %s: %s", step, rcv.sop_instance_uid, exc)
            return self._fail(
                rcv, status.REFUSED_OUT_OF_RESOURCES, "no space left on the data directory"
            )
        log.error("%s failed for %s: %s", step, rcv.sop_instance_uid, exc)
        return self._fail(
            rcv, status.PROCESSING_FAILURE, status.error_comment(f"{step} failed", exc)
        )

    def _ingest(self, rcv: Received) -> Outcome:
        if rcv.receive_error is not None:
            return self._write_failed(rcv, rcv.receive_error, "receiving the data set")
        if self.max_instance_bytes:
            size = rcv.path.stat().st_size
            if size > self.max_instance_bytes:
                return self._fail(
                    rcv,
                    status.ERROR_CANNOT_UNDERSTAND_TOO_LARGE,
                    f"instance of {size} bytes exceeds the limit of {self.max_instance_bytes}",
                )
        if self.min_free_bytes or self.on_low_space is not None:
            free = self.store.free_bytes()
            if self.on_low_space is not None and free < self.low_space_bytes:
                self.on_low_space()
            if free < self.min_free_bytes:
                return self._fail(
                    rcv,
                    status.REFUSED_OUT_OF_RESOURCES,
                    "free space on the data directory is below the configured floor",
                )
        try:
            received = read_received(rcv.path)
        except MalformedDataset as exc:
            return self._fail(rcv, status.ERROR_CANNOT_UNDERSTAND, str(exc))
        # Everything reads a view of the header: reading converts elements, and a converted
        # element would be re-encoded from its value.  The header itself is only touched by
        # the edits, so every element they do not change is written back as received.
        header = header_view(received)
        mismatch = self._check_identity(rcv, header)
        if mismatch:
            return self._fail(rcv, status.ERROR_DATASET_DOES_NOT_MATCH_SOP_CLASS, mismatch)
        try:
            sop_uid = check_uid(rcv.sop_instance_uid, "SOPInstanceUID")
            sop_class = check_uid(rcv.sop_class_uid, "SOPClassUID")
            study_uid = check_uid(header.get("StudyInstanceUID"), "StudyInstanceUID")
            series_uid = check_uid(header.get("SeriesInstanceUID"), "SeriesInstanceUID")
            relpath = self.store.relpath(study_uid, series_uid, sop_uid)
        except InvalidUID as exc:
            return self._fail(rcv, status.ERROR_CANNOT_UNDERSTAND_UID, str(exc))

        result = self._run_pipeline(header, rcv)
        if self.policy.on_invalid_spacing == "reject" and result.verdict == Severity.INVALID:
            invalid = [f.code for f in result.findings if f.severity == Severity.INVALID]
            return Outcome(
                status.ERROR_DATASET_DOES_NOT_MATCH_SOP_CLASS,
                sop_uid,
                comment=f"invalid spacing rejected by site policy: {', '.join(invalid)}"[:1024],
                result=result,
            )
        header_bytes = rewrite(received, result, self.ae_title)
        code = status.SUCCESS
        if result.edits and self.policy.coercion_status == "warning":
            code = status.WARNING_COERCION_OF_DATA_ELEMENTS

        meta = stored_file_meta(
            sop_class, sop_uid, received.transfer_syntax_uid, rcv.calling_ae_title, self.ae_title
        )
        entry = self._entry(
            rcv, received, header, result, relpath, code, sop_class, study_uid, series_uid
        )
        # A resend of the node's own corrected output (rule 7): the original it kept of
        # the modality's bytes still describes the stored file, and stays.
        resent_correction = ALREADY_CORRECTED in result.codes
        with self.store.locked(sop_uid):
            keep_original = resent_correction and self.store.original_path(relpath).is_file()
            try:
                # (an edited resend whose original is kept is written, its bytes not moved)
                renamed = (header_bytes is None or not keep_original) and self._received_as_stored(
                    received, meta
                )
                if renamed:
                    # Received into the store's tmp/ with this File Meta (the network
                    # layer's receive seam): renamed into place, not copied.
                    pending = self.store.put_received(
                        relpath,
                        received.path,
                        (lambda fh: write_part10(fh, meta, received, header_bytes))
                        if header_bytes is not None
                        else None,
                    )
                else:
                    pending = self.store.put(
                        relpath,
                        lambda fh: write_part10(fh, meta, received, header_bytes),
                        original=(lambda fh: write_part10(fh, meta, received, None))
                        if header_bytes is not None and not keep_original
                        else None,
                    )
            except OSError as exc:
                if not out_of_space(exc):
                    raise
                # The store removed its partial file and kept any earlier copy.
                log.error("data directory full while storing %s: %s", sop_uid, exc)
                return Outcome(
                    status.REFUSED_OUT_OF_RESOURCES,
                    sop_uid,
                    comment="no space left on the data directory",
                    result=result,
                )
            entry.size_bytes = pending.size
            pending.keep_original = keep_original
            kept = header_bytes is not None or keep_original
            entry.original_path = str(relpath) if kept else None
            entry.keep_actions = resent_correction
            if self.journal is not None:
                outcome = self._journal(pending, entry, result, code)
                outcome.renamed = renamed and outcome.stored
                return outcome
            try:
                resend = self._index(entry, result)
            except Exception as exc:
                log.exception("index commit failed for %s; file removed", sop_uid)
                self.store.rollback(pending)
                full = out_of_space(exc)
                return Outcome(
                    status.REFUSED_OUT_OF_RESOURCES if full else status.PROCESSING_FAILURE,
                    sop_uid,
                    comment="no space left for the index"
                    if full
                    else status.error_comment("index commit failed", exc),
                    result=result,
                )
            self.store.commit(pending)
        return Outcome(
            code, sop_uid, resend=resend, stored_path=pending.path, result=result, renamed=renamed
        )

    def _journal(
        self, pending: PendingFile, entry: InstanceEntry, result: PipelineResult, code: int
    ) -> Outcome:
        """The file is durable: mark it durably as still to be indexed, then answer.  A
        resend is known by the copy the store moved aside (the index is not asked)."""
        assert self.journal is not None
        item = JournalItem(entry, result, time.time())
        try:
            self.journal.append(item.encode())
        except Exception as exc:
            log.exception("journal write failed for %s; file removed", entry.sop_instance_uid)
            self.store.rollback(pending)
            full = out_of_space(exc)
            return Outcome(
                status.REFUSED_OUT_OF_RESOURCES if full else status.PROCESSING_FAILURE,
                entry.sop_instance_uid,
                comment="no space left on the data directory"
                if full
                else status.error_comment("journal write failed", exc),
                result=result,
            )
        self.store.commit(pending)
        resend = pending.backup is not None
        return Outcome(
            code, entry.sop_instance_uid, resend=resend, stored_path=pending.path, result=result
        )

    def _index(self, entry: InstanceEntry, result: PipelineResult) -> bool:
        """One short write transaction; retried when it lost a race with another writer."""
        for attempt in range(INDEX_ATTEMPTS):
            try:
                with write_session(self.sessions) as session:
                    instance, resend = index_instance(session, entry, self.tolerance)
                    if self.on_indexed is not None:
                        self.on_indexed(session, instance, entry, result)
                return resend
            except (IntegrityError, OperationalError):
                if attempt == INDEX_ATTEMPTS - 1:
                    raise
                log.info("index transaction for %s lost a race; retrying", entry.sop_instance_uid)
                time.sleep(0.05 * (attempt + 1))
        raise AssertionError("unreachable")

    def _received_as_stored(self, received: ReceivedFile, meta: bytes) -> bool:
        """Whether the received file already is the file to store: in the store's ``tmp/``
        folder, its File Meta Information exactly ``meta`` (PS3.10 7.1) and its data set
        right behind it, as :func:`stored_file_meta` wrote it while the data set arrived."""
        return received.path.parent == self.store.tmp and received.meta_bytes == meta

    # -- steps -----------------------------------------------------------------------------
    @staticmethod
    def _check_identity(rcv: Received, header: Dataset) -> str | None:
        """SOP Class/Instance of the data set must be the request's (PS3.4 B.2.3, 0xA900)."""
        problems = []
        for keyword, requested in (
            ("SOPClassUID", rcv.sop_class_uid),
            ("SOPInstanceUID", rcv.sop_instance_uid),
        ):
            in_data = normalize_uid(_text(header, keyword))
            if not in_data:
                problems.append(f"{keyword} is missing from the data set")
            elif in_data != normalize_uid(requested):
                problems.append(
                    f"{keyword} {in_data} in the data set differs from the request's {requested}"
                )
        return "; ".join(problems) or None

    def _run_pipeline(self, header: Dataset, rcv: Received) -> PipelineResult:
        ctx = InstanceContext(
            calling_ae_title=rcv.calling_ae_title,
            called_ae_title=rcv.called_ae_title,
            node_ae_title=self.ae_title,
        )
        return run_decisions(header, ctx, self.policy)

    def _entry(
        self,
        rcv: Received,
        received: ReceivedFile,
        h: Dataset,
        result: PipelineResult,
        relpath: Path,
        code: int,
        sop_class: str,
        study_uid: str,
        series_uid: str,
    ) -> InstanceEntry:
        eff = result.effective
        return InstanceEntry(
            study_instance_uid=study_uid,
            series_instance_uid=series_uid,
            sop_instance_uid=normalize_uid(rcv.sop_instance_uid),
            sop_class_uid=sop_class,
            transfer_syntax_uid=str(received.transfer_syntax_uid),
            path=str(relpath),
            size_bytes=received.size,
            calling_ae_title=rcv.calling_ae_title[:16],
            called_ae_title=rcv.called_ae_title[:16],
            peer_address=rcv.peer_address,
            received_at=datetime.now(UTC),
            status=code,
            study={
                "patient_id": _text(h, "PatientID"),
                "patient_name": _text(h, "PatientName", 324),
                "accession_number": _text(h, "AccessionNumber"),
                "study_date": _text(h, "StudyDate", 8),
                "study_time": _text(h, "StudyTime", 32),
                "study_description": _text(h, "StudyDescription"),
            },
            series={**series_fields(h), "software_versions": _text(h, "SoftwareVersions")},
            instance={
                "instance_number": _text(h, "InstanceNumber", 12),
                "number_of_frames": _int(h, "NumberOfFrames"),
                "rows": _int(h, "Rows"),
                "columns": _int(h, "Columns"),
                "received_pixel_spacing": _raw(h, "PixelSpacing"),
                "pixel_spacing_row_mm": eff.row_mm,
                "pixel_spacing_column_mm": eff.column_mm,
                "pixel_spacing_row_decimals": _decimals(eff.row_mm),
                "pixel_spacing_column_decimals": _decimals(eff.column_mm),
                "spacing_source": eff.source,
                "calibration": eff.calibration,
                "verdict": result.verdict,
                "frame_of_reference_uid": _text(h, "FrameOfReferenceUID"),
                "image_position_patient": _raw(h, "ImagePositionPatient"),
                "image_orientation_patient": _raw(h, "ImageOrientationPatient"),
                "slice_thickness": _float(h, "SliceThickness"),
                "spacing_between_slices": _float(h, "SpacingBetweenSlices"),
            },
            # geometry after the edits (a swap changes the Pixel Spacing the series sees)
            slices=edited_slices(received, h, result),
            findings=[
                FindingRow(f.code, f.severity.value, f.message, f.rule, f.tag)
                for f in result.findings
            ],
            actions=[
                ActionRow(e.code, e.reason, e.attribute, "/".join(map(str, e.path)), e.old, e.new)
                for e in result.edits
            ],
        )


def out_of_space(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) is a full disk or quota (ENOSPC, EDQUOT), or a
    database that says so (SQLite ``database or disk is full``)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if "database or disk is full" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def stored_file_meta(
    sop_class_uid: str,
    sop_instance_uid: str,
    transfer_syntax_uid: str,
    calling_ae_title: str,
    node_ae_title: str,
) -> bytes:
    """The File Meta Information (PS3.10 7.1) of a stored instance, encoded (group 0002
    with its group length, no preamble): the node as implementation, the calling AE as
    Source and Sending AE Title (0002,0016)/(0002,0017), the node as Receiving AE Title
    (0002,0018).  Written by the network layer while a data set arrives, and by
    :class:`Ingestor` when it writes a stored file; the same bytes either way.  The UIDs
    are normalized (``storage.uids.normalize_uid``), not checked again: the ingest checks
    them once (PS3.5 9.1) and stores nothing whose UIDs fail."""
    return file_meta_bytes(
        sop_class_uid=normalize_uid(sop_class_uid),
        sop_instance_uid=normalize_uid(sop_instance_uid),
        transfer_syntax_uid=normalize_uid(transfer_syntax_uid),
        source_ae_title=calling_ae_title,
        receiving_ae_title=node_ae_title,
        implementation_class_uid=IMPLEMENTATION_CLASS_UID,
        implementation_version_name=IMPLEMENTATION_VERSION_NAME,
    )


def _decimals(value: float | None) -> int | None:
    return None if value is None else decimals_of(value)
