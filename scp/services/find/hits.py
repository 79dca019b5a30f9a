"""The matches of one batch and the values computed for them (PS3.4 C.4.1.1.3.2).

A :class:`Hit` is one matching entity with its parents.  Keys that no index column holds
are computed per batch, in the batch's session, with one query per kind of value:

* PATIENT: Number of Patient Related Studies (0020,1200), Series (0020,1202) and
  Instances (0020,1204), PS3.4 C.3.1.
* STUDY: Modalities in Study (0008,0061), Number of Study Related Series (0020,1206) and
  Number of Study Related Instances (0020,1208), PS3.4 C.3.4.
* SERIES Spacing Between Slices (0018,0088): the Z spacing the node *measured*, the median
  gap of the main stack (rulebook rule 24), current while the series is still receiving;
  zero length when undefined (a single position, duplicates that are not a clean 4D
  repeat, unusable geometry), never the declared value.
* SERIES Pixel Spacing (0028,0030): the instances' consensus effective spacing, when it
  comes from Pixel Spacing or the Pixel Measures Sequence and every instance agrees.
* SERIES Slice Thickness (0018,0050): the main stack's declared thickness.
* IMAGE Pixel Spacing (0028,0030): the value in the stored file -- the last recorded
  edit of the top-level element (a swap rule, a reformat), otherwise the value as
  received -- as text, not re-formatted; zero length when absent or not a valid DS.

The SERIES values come from the same series summary the HTTP API serves (the node wires
in its ``IndexQueries``, a :class:`SeriesSummaries`).  Values are DS text (PS3.5 6.2) in
mm, ``None`` when unknown.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy import ColumnElement, func, or_, select
from sqlalchemy.orm import Session

from scp.pipeline.ds import DS_MAX_BYTES, DS_PATTERN, format_ds
from scp.services.find.keys import KeyDef, Level
from storage.models import Instance, InstanceAction, Series, Study


class SeriesSummaries(Protocol):
    """Where the SERIES summaries come from: the node's ``IndexQueries``."""

    def series_dicts(
        self, session: Session, rows: Sequence[tuple[Series, str]]
    ) -> list[dict[str, Any]]:
        """The summary of each ``(series, study_instance_uid)`` row, in ``session``:
        ``series_instance_uid``, ``slice_spacing["mm"]``, ``slice_thickness_mm`` and
        ``pixel_spacing`` (``consistent``, ``source``, ``row_mm``, ``column_mm``), mm."""
        ...


@dataclass
class Hit:
    """One matching entity with its parents, and the values computed for its batch."""

    study: Study
    series: Series | None = None
    instance: Instance | None = None
    #: Values of computed keys by keyword (see :func:`compute`).
    computed: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_row(cls, level: Level, row: Any) -> Hit:
        """A hit from a result row of :func:`scp.services.find.sql.statement`:
        ``(Study,)`` (PATIENT, STUDY), ``(Series, Study)`` or ``(Instance, Series, Study)``."""
        if level in ("PATIENT", "STUDY"):
            return cls(study=row[0])
        if level == "SERIES":
            return cls(study=row[1], series=row[0])
        return cls(study=row[2], series=row[1], instance=row[0])

    def entity(self, level: Level) -> Any:
        """The index entity of ``level``: a Study (PATIENT keys are kept on the study row),
        Series or Instance (``None`` if absent)."""
        return {
            "PATIENT": self.study,
            "STUDY": self.study,
            "SERIES": self.series,
            "IMAGE": self.instance,
        }[level]

    def value(self, key: KeyDef) -> Any:
        """The hit's value of ``key`` as the index holds it; ``None`` when unknown."""
        if key.computed:
            return self.computed.get(key.keyword)
        assert key.attribute is not None
        return getattr(self.entity(key.level), key.attribute)


def compute(
    session: Session, queries: SeriesSummaries, level: Level, wanted: set[str], hits: list[Hit]
) -> None:
    """Fill :attr:`Hit.computed` for a batch of ``level`` hits with the ``wanted`` keys
    (:attr:`scp.services.find.identifier.FindRequest.wanted`)."""
    if not hits or not wanted:
        return
    if level == "PATIENT":
        _patient_values(session, hits)
    elif level == "STUDY":
        _study_values(session, hits, wanted)
    elif level == "SERIES":
        _series_values(session, queries, hits)
    elif level == "IMAGE" and "PixelSpacing" in wanted:
        _stored_pixel_spacing(session, hits)


def _patient_values(session: Session, hits: list[Hit]) -> None:
    """Number of Patient Related Studies (0020,1200), Series (0020,1202) and Instances
    (0020,1204) for a batch of patients (the studies of one Patient ID, PS3.4 C.3.1)."""
    ids = [h.study.patient_id for h in hits]
    known = [i for i in ids if i is not None]
    which: ColumnElement[bool] = Study.patient_id.in_(known)
    if len(known) < len(ids):
        which = or_(which, Study.patient_id.is_(None))
    counts: dict[str | None, tuple[int, int, int]] = {}
    for patient_id, n_studies, n_series, n_instances in session.execute(
        select(
            Study.patient_id,
            func.count(func.distinct(Study.id)),
            func.count(Series.id),
            func.coalesce(func.sum(Series.instance_count), 0),
        )
        .outerjoin(Series, Series.study_id == Study.id)
        .where(which)
        .group_by(Study.patient_id)
    ):
        counts[patient_id] = (int(n_studies), int(n_series), int(n_instances))
    for hit in hits:
        studies, series, instances = counts.get(hit.study.patient_id, (0, 0, 0))
        hit.computed["NumberOfPatientRelatedStudies"] = studies
        hit.computed["NumberOfPatientRelatedSeries"] = series
        hit.computed["NumberOfPatientRelatedInstances"] = instances


def _study_values(session: Session, hits: list[Hit], wanted: set[str]) -> None:
    """Modalities in Study (0008,0061), Number of Study Related Series (0020,1206) and
    Instances (0020,1208) for a batch of studies (PS3.4 C.3.4)."""
    ids = [h.study.id for h in hits]
    modalities: dict[int, set[str]] = defaultdict(set)
    counts: dict[int, tuple[int, int]] = {}
    if "ModalitiesInStudy" in wanted:
        for study_id, modality in session.execute(
            select(Series.study_id, Series.modality)
            .where(Series.study_id.in_(ids), Series.modality.is_not(None))
            .distinct()
        ):
            if modality:
                modalities[study_id].add(modality)
    if wanted & {"NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances"}:
        for study_id, n_series, n_instances in session.execute(
            select(
                Series.study_id,
                func.count(Series.id),
                func.coalesce(func.sum(Series.instance_count), 0),
            )
            .where(Series.study_id.in_(ids))
            .group_by(Series.study_id)
        ):
            counts[study_id] = (int(n_series), int(n_instances))
    for hit in hits:
        n_series, n_instances = counts.get(hit.study.id, (0, 0))
        hit.computed["ModalitiesInStudy"] = sorted(modalities.get(hit.study.id, ())) or None
        hit.computed["NumberOfStudyRelatedSeries"] = n_series
        hit.computed["NumberOfStudyRelatedInstances"] = n_instances


def _series_values(session: Session, queries: SeriesSummaries, hits: list[Hit]) -> None:
    """Spacing Between Slices as measured, Pixel Spacing and Slice Thickness of a batch
    of series, from the same SERIES summary the HTTP API serves."""
    pairs = [(h.series, h.study.study_instance_uid) for h in hits if h.series is not None]
    summaries = {d["series_instance_uid"]: d for d in queries.series_dicts(session, pairs)}
    for hit in hits:
        assert hit.series is not None
        summary = summaries.get(hit.series.series_instance_uid)
        if summary is None:
            continue
        hit.computed["SpacingBetweenSlices"] = _ds(summary["slice_spacing"]["mm"])
        hit.computed["SliceThickness"] = _ds(summary["slice_thickness_mm"])
        ps = summary["pixel_spacing"]
        if (
            ps["consistent"]
            and ps["source"] in ("PixelSpacing", "PixelMeasuresSequence")
            and ps["row_mm"] is not None
            and ps["column_mm"] is not None
        ):
            hit.computed["PixelSpacing"] = [_ds(ps["row_mm"]), _ds(ps["column_mm"])]


def _stored_pixel_spacing(session: Session, hits: list[Hit]) -> None:
    """Pixel Spacing (0028,0030) as in the stored file: the last recorded edit of the
    top-level element (PS3.3 C.12.1.1.9), else the value as received."""
    ids = [h.instance.id for h in hits if h.instance is not None]
    edited: dict[int, str | None] = {}
    for instance_id, new in session.execute(
        select(InstanceAction.instance_id, InstanceAction.new)
        .where(InstanceAction.instance_id.in_(ids), InstanceAction.path == "PixelSpacing")
        .order_by(InstanceAction.id)
    ):
        edited[instance_id] = new
    for hit in hits:
        assert hit.instance is not None
        text = edited.get(hit.instance.id, hit.instance.received_pixel_spacing)
        hit.computed["PixelSpacing"] = _ds_text(text)


def _ds_text(text: str | None) -> list[str] | None:
    """Stored DS text as response values; ``None`` if absent or not a valid DS (PS3.5 6.2)."""
    if not text:
        return None
    parts = [p.strip(" \x00") for p in text.split("\\")]
    for part in parts:
        if not DS_PATTERN.fullmatch(part) or len(part) > DS_MAX_BYTES:
            return None
    return parts


def _ds(value: float | None) -> str | None:
    """A value in mm as DS text (PS3.5 6.2); ``None`` stays ``None``."""
    return None if value is None else format_ds(value)
