"""STOW-RS: store the parts of a request through the C-STORE ingest path (PS3.18 10.5).

Each part of a ``multipart/related; type="application/dicom"`` body, already written to
its own file by :class:`scp.services.dicomweb.multipart.PartWriter`, goes through
:meth:`scp.services.ingest.Ingestor.ingest` exactly as a C-STORE data set does
(pipeline, edits, durable store, index, forwarding), and answers with the same status
a C-STORE would get. The response (PS3.18 10.5.3, Table 10.5.3-1) is a DICOM JSON data
set (PS3.18 F.2):

* Retrieve URL (0008,1190) of the study;
* Referenced SOP Sequence (0008,1199): each stored instance, with its Retrieve URL and,
  when the status was a warning (0xB000 Coercion of Data Elements...), Warning Reason
  (0008,1196);
* Failed SOP Sequence (0008,1198): each instance not stored, with Failure Reason
  (0008,1197): the C-STORE failure status (0xA700, 0xA900, 0xC000...).

HTTP status: 200 when every instance was stored with Success, 202 when some were stored
and others failed or carried a warning, 409 when none was stored (PS3.18 10.5.3.1).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydicom import dcmread

from scp import status
from scp.metrics import METRICS
from scp.services.dicomweb.multipart import MediaType, Part
from scp.services.ingest import Ingestor, Outcome, Received
from storage.uids import normalize_uid

log = logging.getLogger("spacing_scp.stow")

#: The only media type a STOW-RS part may have here (PS3.18 10.5.1.1, the binary form).
DICOM_MEDIA_TYPE = "application/dicom"
#: Failure Reason when a part is not a DICOM Part 10 file, or has no SOP identity.
CANNOT_UNDERSTAND = status.ERROR_CANNOT_UNDERSTAND
#: Failure Reason when the instance belongs to another study than the request's
#: ``/studies/{study}`` (PS3.18 10.5.3.2: the instance is refused, the others stored).
STUDY_MISMATCH = status.ERROR_DATASET_DOES_NOT_MATCH_SOP_CLASS


@dataclass(frozen=True)
class StowItem:
    """What became of one part: its SOP identity (``""`` when unreadable), the C-STORE
    status, and a comment for failures."""

    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str
    status: int
    comment: str = ""
    series_instance_uid: str = ""

    @property
    def stored(self) -> bool:
        return status.is_stored(self.status)


@dataclass(frozen=True)
class StowResult:
    """The answer to one STOW-RS request: HTTP status and the DICOM JSON body."""

    http_status: int
    body: dict[str, Any]
    items: tuple[StowItem, ...]


class StowService:
    """Stores STOW-RS parts with the node's :class:`~scp.services.ingest.Ingestor`."""

    def __init__(self, ingestor: Ingestor) -> None:
        self.ingestor = ingestor

    def store(
        self,
        parts: Sequence[Part],
        *,
        base_url: str,
        study_instance_uid: str | None = None,
        peer_address: str | None = None,
    ) -> StowResult:
        """Ingest every part (removing its file), and build the response.

        ``base_url``: the DICOMweb root (``http://host:port/dicom-web``) the Retrieve URLs
        start with; ``study_instance_uid``: the study of ``POST /studies/{study}``.
        """
        items = [self._one(p, study_instance_uid, peer_address) for p in parts]
        return StowResult(
            _http_status(items), response_body(items, base_url, study_instance_uid), tuple(items)
        )

    def _one(self, part: Part, study: str | None, peer: str | None) -> StowItem:
        try:
            return self._ingest(part, study, peer)
        finally:
            with contextlib.suppress(FileNotFoundError):
                part.path.unlink()

    def _ingest(self, part: Part, study: str | None, peer: str | None) -> StowItem:
        media = MediaType.parse(part.content_type) if part.content_type else None
        if media is not None and media.essence != DICOM_MEDIA_TYPE:
            return _failed(
                CANNOT_UNDERSTAND, f"part of type {media.essence!r}, not {DICOM_MEDIA_TYPE}"
            )
        try:
            ds = dcmread(
                part.path,
                stop_before_pixels=True,
                specific_tags=[
                    "SOPClassUID",
                    "SOPInstanceUID",
                    "StudyInstanceUID",
                    "SeriesInstanceUID",
                ],
            )
            sop_class = normalize_uid(str(ds.get("SOPClassUID", "") or ""))
            sop_uid = normalize_uid(str(ds.get("SOPInstanceUID", "") or ""))
            study_uid = normalize_uid(str(ds.get("StudyInstanceUID", "") or ""))
            series_uid = normalize_uid(str(ds.get("SeriesInstanceUID", "") or ""))
        except Exception as exc:
            return _failed(CANNOT_UNDERSTAND, f"not a DICOM Part 10 file: {type(exc).__name__}")
        if not sop_class or not sop_uid:
            return _failed(CANNOT_UNDERSTAND, "SOP Class UID or SOP Instance UID is missing")
        if study and study_uid != normalize_uid(study):
            return StowItem(
                sop_class,
                sop_uid,
                study_uid,
                STUDY_MISMATCH,
                f"Study Instance UID {study_uid} is not the request's {study}",
            )
        try:
            outcome = self.ingestor.ingest(
                Received(
                    path=part.path,
                    sop_class_uid=sop_class,
                    sop_instance_uid=sop_uid,
                    peer_address=peer,
                )
            )
        except Exception as exc:  # same as the C-STORE handler: never an unanswered part
            log.exception("STOW-RS %s failed", sop_uid)
            outcome = Outcome(status.PROCESSING_FAILURE, sop_uid, f"internal error: {exc}")
        METRICS.inc("spacing_scp_stow_instances_total", status=f"0x{outcome.status:04X}")
        log.log(
            logging.INFO if outcome.stored else logging.WARNING,
            "STOW-RS sop=%s status=0x%04X (%s) from=%s%s",
            sop_uid,
            outcome.status,
            status.describe(outcome.status),
            peer or "-",
            f" comment={outcome.comment!r}" if outcome.comment else "",
        )
        return StowItem(
            sop_class, sop_uid, study_uid, outcome.status, outcome.comment or "", series_uid
        )


def _failed(code: int, comment: str) -> StowItem:
    return StowItem("", "", "", code, comment)


def _http_status(items: Sequence[StowItem]) -> int:
    if not items or not any(i.stored for i in items):
        return 409
    if all(i.status == status.SUCCESS for i in items):
        return 200
    return 202


def _element(vr: str, *values: Any) -> dict[str, Any]:
    return {"vr": vr, "Value": list(values)} if values else {"vr": vr}


def response_body(
    items: Sequence[StowItem], base_url: str, study_instance_uid: str | None
) -> dict[str, Any]:
    """The STOW-RS response data set in the DICOM JSON model (PS3.18 Table 10.5.3-1, F.2)."""
    body: dict[str, Any] = {}
    studies = {i.study_instance_uid for i in items if i.stored and i.study_instance_uid}
    study = study_instance_uid or (next(iter(studies)) if len(studies) == 1 else None)
    if study:
        body["00081190"] = _element("UR", f"{base_url}/studies/{study}")
    failed = [_failed_item(i) for i in items if not i.stored]
    stored = [_stored_item(i, base_url) for i in items if i.stored]
    if failed:
        body["00081198"] = {"vr": "SQ", "Value": failed}
    if stored:
        body["00081199"] = {"vr": "SQ", "Value": stored}
    return body


def _failed_item(item: StowItem) -> dict[str, Any]:
    out: dict[str, Any] = {
        "00081150": _element("UI", item.sop_class_uid) if item.sop_class_uid else {"vr": "UI"},
        "00081155": (
            _element("UI", item.sop_instance_uid) if item.sop_instance_uid else {"vr": "UI"}
        ),
        "00081197": _element("US", item.status),
    }
    if item.comment:
        # Error Comment (0000,0902) is not in Table 10.5.3-1; the reason in words goes in
        # Text Value (0040,A160), as several archives do.
        out["0040A160"] = _element("UT", item.comment)
    return out


def _stored_item(item: StowItem, base_url: str) -> dict[str, Any]:
    url = (
        f"{base_url}/studies/{item.study_instance_uid}/series/{item.series_instance_uid}"
        f"/instances/{item.sop_instance_uid}"
    )
    out: dict[str, Any] = {
        "00081150": _element("UI", item.sop_class_uid),
        "00081155": _element("UI", item.sop_instance_uid),
        "00081190": _element("UR", url),
    }
    if item.status != status.SUCCESS:
        out["00081196"] = _element("US", item.status)
    return out
