"""``spacing-scp reindex``: rebuild the index from the file store.

The file store is the truth; the index can always be rebuilt from it (lost or
deleted database, restore from a file backup).  Every ``instances/**/*.dcm`` is
checked the way a received instance is (the structural walker of
:func:`storage.part10.read_received`, the File Meta Information of PS3.10 7.1,
its place in the store) and indexed if its SOP Instance UID is not indexed yet;
running it on a complete index changes nothing.  A file that fails a check is
reported and left alone: it is never indexed, never changed, never deleted.

**Stored files the node corrected.** A stored file is what the node vouches for:
the *corrected* instance.  Running the spacing pipeline on it again would decide
on already corrected values (a swap rule would swap the values back).  The
correction is recorded in the file itself, the standard way (PS3.3 C.12.1.1.9):
the item the node appended to Original Attributes Sequence (0400,0561) has
Modifying System (0400,0563) = the node's AE title and Attribute Modification
DateTime (0400,0562) = Instance Coercion DateTime (0008,0015) (both written by
:func:`scp.pipeline.record.apply_edits` in one call), and holds the previous value
of every changed top-level attribute (Modified Attributes Sequence (0400,0550),
zero length when it was absent, or when it was nonconforming, whose received bytes
are then in Nonconforming Modified Attributes Sequence (0400,0551)).  So:

1. *Was the file changed when it was stored?*  Yes when an ``originals/`` copy
   exists or the last item of (0400,0561) is the node's and carries the Instance
   Coercion DateTime.  Earlier items -- another system's, or the node's own on a
   copy that was forwarded and came back -- were part of what was received and stay.
2. If changed, the received header is rebuilt by undoing that one item, and the
   pipeline runs on it with the configured policy, exactly as at reception.  The
   edits it decides must reproduce the stored values and touch exactly the recorded
   attributes; then the index entry (findings, actions, status, received Pixel
   Spacing, effective spacing, geometry) is the one the node wrote at reception.
3. If they do not (the policy changed since), the file wins: the actions are read
   from the record (code ``RECORDED_MODIFICATION``), the findings are the pipeline's
   on the stored file -- where the node's own correction is recognised and never
   undone (``ALREADY_CORRECTED``) -- and a ``REINDEX_POLICY_CHANGED`` warning says so.
4. If the file was stored unchanged, the pipeline runs on it as at reception; edits
   it would now make are not applied (the store is never rewritten by a reindex) and
   are reported as findings, as when a rewrite fails at reception.

What is not in the files is not restored: the reception time becomes the file's
modification time, the peer address is unknown, the receive count starts at 1.
Forwarding jobs are not queued again (which copies were sent is not in the store).
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.tag import BaseTag, Tag
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from scp import status
from scp.config import Config
from scp.pipeline import run_pipeline
from scp.pipeline.model import Edit, Finding, InstanceContext, PipelineResult, Severity
from scp.pipeline.record import (
    INSTANCE_COERCION_DATETIME,
    ORIGINAL_ATTRIBUTES_SEQUENCE,
    element_text,
)
from scp.services.decisions import withdraw_edits
from scp.services.header_fields import header_text
from scp.services.indexing import index_instance
from scp.services.ingest import Ingestor, Received
from storage.db import ensure_schema, make_engine, make_session_factory, write_session
from storage.filestore import FileStore
from storage.index import ActionRow
from storage.models import Instance, Series, Study
from storage.part10 import MalformedDataset, ReceivedFile, read_received
from storage.uids import InvalidUID, check_uid, normalize_uid

log = logging.getLogger("spacing_scp.reindex")

RECORDED_MODIFICATION = "RECORDED_MODIFICATION"
REINDEX_POLICY_CHANGED = "REINDEX_POLICY_CHANGED"


class InvalidStoredFile(ValueError):
    """A file of the store that cannot be indexed (the message says why)."""


@dataclass
class ReindexReport:
    indexed: int = 0
    already_indexed: int = 0
    policy_changed: int = 0
    skipped: list[tuple[Path, str]] = field(default_factory=list)


# -- checks ------------------------------------------------------------------------------------


def _meta_text(meta: Dataset, keyword: str) -> str:
    value = meta.get(keyword)
    return "" if value is None else str(value).strip("\x00 ")


def file_meta_problems(received: ReceivedFile) -> list[str]:
    """What is wrong with a stored file's File Meta Information (PS3.10 7.1).

    Required: (0002,0001) version 00 01, (0002,0002)/(0002,0003) valid UIDs equal to
    the data set's SOP Class/Instance UID, (0002,0010) a valid UID and
    (0002,0012) a valid UID.  An empty list means the meta is valid.
    """
    meta, header = received.file_meta, received.header
    problems: list[str] = []
    version = meta.get("FileMetaInformationVersion")
    if version is None or bytes(version) != b"\x00\x01":
        problems.append("(0002,0001) File Meta Information Version is not 00 01")
    for keyword, in_data in (
        ("MediaStorageSOPClassUID", "SOPClassUID"),
        ("MediaStorageSOPInstanceUID", "SOPInstanceUID"),
    ):
        value = _meta_text(meta, keyword)
        try:
            check_uid(value, keyword)
        except InvalidUID as exc:
            problems.append(str(exc))
            continue
        data_value = normalize_uid(str(header.get(in_data, "") or ""))
        if data_value != value:
            problems.append(f"{keyword} {value} differs from the data set's {in_data}")
    for keyword in ("TransferSyntaxUID", "ImplementationClassUID"):
        try:
            check_uid(_meta_text(meta, keyword), keyword)
        except InvalidUID as exc:
            problems.append(str(exc))
    return problems


def check_stored_file(store: FileStore, path: Path) -> ReceivedFile:
    """Read a stored file as the node would; raise :class:`InvalidStoredFile`."""
    try:
        received = read_received(path)
    except MalformedDataset as exc:
        raise InvalidStoredFile(f"malformed: {exc}") from None
    problems = file_meta_problems(received)
    if problems:
        raise InvalidStoredFile("invalid File Meta Information: " + "; ".join(problems))
    header = received.header
    try:
        expected = store.relpath(
            check_uid(header.get("StudyInstanceUID"), "StudyInstanceUID"),
            check_uid(header.get("SeriesInstanceUID"), "SeriesInstanceUID"),
            check_uid(header.get("SOPInstanceUID"), "SOPInstanceUID"),
        )
    except InvalidUID as exc:
        raise InvalidStoredFile(str(exc)) from None
    if store.path(expected) != path:
        raise InvalidStoredFile(f"not where its UIDs place it ({expected})")
    return received


# -- undoing the node's own modification -------------------------------------------------------


def _is_empty(elem: DataElement) -> bool:
    value = elem.value
    return value is None or (hasattr(value, "__len__") and len(value) == 0)


def _raw_element(tag: BaseTag, value: bytes, like: Dataset) -> RawDataElement:
    implicit, little = like.original_encoding
    vr = dictionary_VR(tag)
    return RawDataElement(
        tag, vr, len(value), value, 0, bool(implicit), True if little is None else little
    )


def node_modification(header: Dataset, ae_title: str) -> Dataset | None:
    """The Original Attributes Sequence item the node appended when storing, if any."""
    try:
        items = header.get(ORIGINAL_ATTRIBUTES_SEQUENCE)
        if items is None or not isinstance(items.value, DicomSequence) or not items.value:
            return None
        last: Dataset = items.value[-1]
        system = str(last.get("ModifyingSystem", "") or "").strip()
        stamp = str(last.get("AttributeModificationDateTime", "") or "").strip()
        coerced = header.get(INSTANCE_COERCION_DATETIME)
        coerced_text = str(coerced.value).strip() if coerced is not None else ""
    except Exception:
        return None
    if system != ae_title.strip() or not stamp or stamp != coerced_text:
        return None
    return last


def undo_modification(header: Dataset, item: Dataset) -> Dataset:
    """The header as received: ``header`` with the modification ``item`` undone.

    ``item`` must be the last item of Original Attributes Sequence (0400,0561).
    """
    received = copy.deepcopy(header)
    nonconforming: dict[tuple[int, tuple[int, ...], tuple[int, ...]], bytes] = {}
    for nc in item.get("NonconformingModifiedAttributesSequence") or []:
        pointers = tuple(int(t) for t in _as_list(nc.get("SelectorSequencePointer")))
        indexes = tuple(int(i) for i in _as_list(nc.get("SelectorSequencePointerItems")))
        value = bytes(nc.get("NonconformingDataElementValue") or b"")
        nonconforming[(int(nc.SelectorAttribute), pointers, indexes)] = value
    for mas in item.get("ModifiedAttributesSequence") or []:
        for elem in mas:
            tag = Tag(elem.tag)
            raw = nonconforming.get((int(tag), (), ()))
            if raw is not None:
                received[tag] = _raw_element(tag, raw, received)
            elif _is_empty(elem):
                if tag in received:
                    del received[tag]  # absent before the modification
            else:
                received[tag] = copy.deepcopy(elem)
    for (leaf, pointers, indexes), raw in nonconforming.items():
        if not pointers:
            continue
        container: Dataset = received
        for seq_tag, index in zip(pointers, indexes, strict=True):
            container = container[seq_tag].value[index - 1]
        container[Tag(leaf)] = _raw_element(Tag(leaf), raw, received)
    oas = received[ORIGINAL_ATTRIBUTES_SEQUENCE].value
    del oas[len(oas) - 1]
    if not oas:
        del received[ORIGINAL_ATTRIBUTES_SEQUENCE]
        if INSTANCE_COERCION_DATETIME in received:
            del received[INSTANCE_COERCION_DATETIME]
    return received


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return [value] if isinstance(value, int) else list(value)


def _value_at(ds: Dataset, path: tuple[str | int, ...]) -> str | None:
    """The text of the element at an edit path, ``None`` when absent."""
    container: Any = ds
    try:
        for i in range(0, len(path) - 1, 2):
            container = container[path[i]].value[path[i + 1]]
        leaf = Tag(str(path[-1]))
        return element_text(container.get_item(leaf)) if leaf in container else None
    except (KeyError, IndexError, TypeError, AttributeError):
        return None


def _norm(text: str | None) -> list[str] | None:
    if text is None:
        return None
    text = text.rstrip("\x00 ")
    return [v.strip(" \x00") for v in text.split("\\")] if text else []


def edits_reproduce(stored: Dataset, edits: list[Edit], item: Dataset) -> bool:
    """Whether ``edits`` turn the received header into ``stored`` as recorded in ``item``."""
    final: dict[tuple[str | int, ...], str | None] = {}
    for edit in edits:
        final[edit.path] = edit.new
    for path, new in final.items():
        if _norm(_value_at(stored, path)) != _norm(new):
            return False
    recorded = {Tag(e.tag) for mas in item.get("ModifiedAttributesSequence") or [] for e in mas}
    touched = set()
    for edit in edits:
        try:
            touched.add(Tag(str(edit.path[0])))
        except (ValueError, TypeError):
            return False
    return recorded == touched


def recorded_actions(stored: Dataset, item: Dataset) -> list[ActionRow]:
    """Actions read from the node's record (when the current policy disagrees)."""
    reason = str(item.get("ReasonForTheAttributeModification", "") or "").strip()
    rows = []
    for mas in item.get("ModifiedAttributesSequence") or []:
        for elem in mas:
            keyword = elem.keyword or f"({elem.tag.group:04X},{elem.tag.elem:04X})"
            old = None if _is_empty(elem) or elem.VR == "SQ" else element_text(elem)
            now = stored.get(elem.tag)
            new = None if now is None or now.VR == "SQ" else element_text(now)
            rows.append(ActionRow(RECORDED_MODIFICATION, reason, keyword, keyword, old, new))
    return rows


# -- the rebuild -------------------------------------------------------------------------------


def stored_files(store: FileStore) -> Iterator[Path]:
    for directory, _dirs, files in os.walk(store.instances):
        for name in sorted(files):
            if name.endswith(".dcm"):
                yield Path(directory) / name


def _not_applied(result: PipelineResult, why: str) -> PipelineResult:
    """Edits the pipeline would make but that are not in the stored file (as ingest's)."""
    if not result.edits:
        return result
    withdrawn = replace(result, findings=list(result.findings), edits=list(result.edits))
    withdraw_edits(withdrawn, why)
    return withdrawn


class Reindexer:
    """Indexes stored files with the node's own code (:class:`scp.services.ingest.Ingestor`)."""

    def __init__(self, cfg: Config, sessions: sessionmaker[Session], store: FileStore) -> None:
        self.cfg = cfg
        self.store = store
        self.sessions = sessions
        self.ae_title = cfg.node.ae_title
        self.ingestor = Ingestor(
            store, sessions, ae_title=self.ae_title, policy=cfg.spacing_policy,
            tolerance=cfg.tolerance,
        )  # fmt: skip

    def run(self) -> ReindexReport:
        # No FileStore.recover() here: a node may be running on this store (its start-up
        # does the recovery); files being written (tmp/, *.prev) are never *.dcm below
        # instances/, so they are not read.
        report = ReindexReport()
        self.fill_patient_names()
        with self.sessions() as session:
            known = set(session.scalars(select(Instance.sop_instance_uid)))
        for path in stored_files(self.store):
            try:
                received = check_stored_file(self.store, path)
            except InvalidStoredFile as exc:
                log.warning("reindex: skipped %s: %s", path, exc)
                report.skipped.append((path, str(exc)))
                continue
            sop = normalize_uid(str(received.header.get("SOPInstanceUID")))
            if sop in known:
                report.already_indexed += 1
                continue
            changed = self.index_file(path, received)
            report.policy_changed += int(changed)
            report.indexed += 1
            known.add(sop)
        return report

    def fill_patient_names(self) -> int:
        """Patient's Name (0010,0010) of studies indexed before the index held it
        (revision 0004), read from one stored file of each; returns how many were set."""
        first = (
            select(func.min(Instance.id))
            .join(Series, Instance.series_id == Series.id)
            .join(Study, Series.study_id == Study.id)
            .where(Study.patient_name.is_(None))
            .group_by(Study.id)
        )
        with self.sessions() as session:
            rows = session.execute(
                select(Series.study_id, Instance.path)
                .join(Series, Instance.series_id == Series.id)
                .where(Instance.id.in_(first))
            ).all()
        filled = 0
        for study_id, relpath in rows:
            try:
                header = dcmread(
                    self.store.path(relpath), stop_before_pixels=True, specific_tags=["PatientName"]
                )
            except Exception as exc:
                log.warning("reindex: Patient's Name of %s not read: %s", relpath, exc)
                continue
            name = header_text(header, "PatientName", 324)
            if name is None:
                continue
            with write_session(self.sessions) as session:
                study = session.get(Study, study_id)
                if study is not None and study.patient_name is None:
                    study.patient_name = name
                    filled += 1
        if filled:
            log.info("reindex: Patient's Name filled in for %d studies", filled)
        return filled

    def index_file(self, path: Path, received: ReceivedFile) -> bool:
        """Index one checked file; return whether the current policy disagreed with it."""
        meta = received.file_meta
        stored = received.header[0x00000000:0xFFFFFFFF]
        relpath = path.relative_to(self.store.instances)
        has_original = self.store.original_path(relpath).is_file()
        item = node_modification(stored, self.ae_title)
        calling = _meta_text(meta, "SourceApplicationEntityTitle")
        called = _meta_text(meta, "ReceivingApplicationEntityTitle")
        ctx = InstanceContext(
            calling_ae_title=calling, called_ae_title=called, node_ae_title=self.ae_title
        )
        policy = self.cfg.spacing_policy
        disagrees = False
        header_for_entry = stored
        if item is not None:
            as_received = undo_modification(stored, item)
            result = run_pipeline(as_received, ctx, policy)
            if edits_reproduce(stored, result.edits, item):
                header_for_entry = as_received
            else:
                disagrees = True
                result = self._record_wins(stored, item, ctx)
        else:
            result = run_pipeline(stored, ctx, policy)
            why = "edits not present in the stored file (found by reindex)"
            if has_original:
                why = "the stored file's modification record is missing; " + why
            result = _not_applied(result, why)
        code = status.SUCCESS
        if (result.edits or disagrees) and policy.coercion_status == "warning":
            code = status.WARNING_COERCION_OF_DATA_ELEMENTS
        rcv = Received(
            path=path,
            sop_class_uid=str(stored.get("SOPClassUID", "")),
            sop_instance_uid=str(stored.get("SOPInstanceUID", "")),
            calling_ae_title=calling,
            called_ae_title=called,
        )
        # The same mapping as at reception: ``header_for_entry`` is the header as received,
        # ``received.header`` the stored one (its geometry is indexed when edits were made).
        entry = self.ingestor._entry(
            rcv,
            received,
            header_for_entry,
            result,
            relpath,
            code,
            normalize_uid(_meta_text(meta, "MediaStorageSOPClassUID")),
            check_uid(stored.get("StudyInstanceUID"), "StudyInstanceUID"),
            check_uid(stored.get("SeriesInstanceUID"), "SeriesInstanceUID"),
        )
        if disagrees and item is not None:
            entry.actions = recorded_actions(stored, item)
        entry.size_bytes = path.stat().st_size
        entry.original_path = str(relpath) if has_original else None
        entry.peer_address = None
        entry.received_at = datetime.fromtimestamp(path.stat().st_mtime, UTC)
        with write_session(self.sessions) as session:
            index_instance(session, entry, self.cfg.tolerance)
        return disagrees

    def _record_wins(self, stored: Dataset, item: Dataset, ctx: InstanceContext) -> PipelineResult:
        result = run_pipeline(stored, ctx, self.cfg.spacing_policy)
        result = _not_applied(result, "the current policy would change the stored file further")
        result.findings.append(
            Finding(
                REINDEX_POLICY_CHANGED,
                Severity.WARNING,
                f"{self.ae_title} changed this instance when storing it (Original Attributes "
                "Sequence (0400,0561), PS3.3 C.12.1.1.9) differently from what the current "
                "policy decides; the index follows the stored file",
            )
        )
        result.findings.append(
            Finding(RECORDED_MODIFICATION, Severity.CORRECTED, "changed when stored (recorded)")
        )
        return result


def reindex(cfg: Config) -> ReindexReport:
    """Open (creating if needed) the configured index and rebuild what is missing."""
    if cfg.database_url.startswith("sqlite"):
        cfg.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(cfg.database_url)
    try:
        ensure_schema(engine)
        store = FileStore(cfg.data_dir)
        return Reindexer(cfg, make_session_factory(engine), store).run()
    finally:
        engine.dispose()
