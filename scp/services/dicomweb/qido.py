"""QIDO-RS: search studies, series and instances with the C-FIND rules (PS3.18 10.6).

A QIDO-RS request becomes a C-FIND identifier (Study Root, PS3.4 C.6.2) and runs through
:class:`scp.services.find.FindService`, so every matching rule is the C-FIND SCP's:
single value, list of UIDs, wild cards (``*``/``?``), DA/TM ranges, unknown values
(PS3.4 C.2.2.2). The differences PS3.18 10.6.1 asks for:

* keys by keyword (``PatientID``) or tag (``00100020``); ``includefield`` (repeated or
  comma-separated, ``all`` for every supported key) adds returned keys to the defaults of
  PS3.18 Table 10.6.3-3/4/5 (those the index holds);
* ``/series`` and ``/instances`` search across studies (relational, PS3.4 C.4.1.2.2);
* ``limit`` and ``offset`` page the matches (``limit`` at most ``max_results``);
* ``fuzzymatching=true`` is not supported: ignored with a ``Warning`` (PS3.18 10.6.1.2.1).

The spacing the node measured and decided is in standard attributes (Pixel Spacing
(0028,0030) as corrected, Spacing Between Slices (0018,0088) as measured), the verdict and
finding codes in the node's private block (creator ``SPACING_SCP``, (0009,1010) verdict,
(0009,1011) codes; :mod:`scp.pipeline.annotate`). Extension parameters, matched after
the C-FIND rules (documented in docs/conformance.md):

* ``PixelSpacing=0.703`` (or ``row\\column``): precision-aware (rulebook rule 31): equal to
  the precision of the value given, so ``0.703`` matches ``0.703125``;
* ``pixel_spacing_mm=a-b`` and ``spacing_between_slices_mm=a-b`` (``-b``, ``a-``, or one
  number): ranges in mm, inclusive, on both Pixel Spacing values / the measured spacing;
* ``verdict=warning`` (several comma-separated: any of), ``finding=SLICE_MISSING`` (the
  series' finding codes, and at instance level the instance's own; several: any of;
  ``!CODE``: without that code);
  these, ``PixelSpacing`` and ``pixel_spacing_mm`` are series and instance parameters.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from scp.pipeline.annotate import DEFAULT_CREATOR
from scp.pipeline.model import SEVERITY_ORDER
from scp.services.find import FindError, FindService, Hit, Level, parse_identifier
from scp.services.find.keys import KEYS, QUERY_RETRIEVE_LEVEL, resolve_key
from storage.models import Instance, InstanceFinding

#: PS3.18 Table 10.6.3-3/4/5, the keys the index holds.
DEFAULT_FIELDS: dict[Level, tuple[str, ...]] = {
    "STUDY": (
        "StudyDate",
        "StudyTime",
        "AccessionNumber",
        "ModalitiesInStudy",
        "PatientID",
        "StudyInstanceUID",
        "StudyDescription",
        "NumberOfStudyRelatedSeries",
        "NumberOfStudyRelatedInstances",
    ),
    "SERIES": (
        "Modality",
        "SeriesDescription",
        "SeriesNumber",
        "SeriesInstanceUID",
        "NumberOfSeriesRelatedInstances",
        "PixelSpacing",
        "SpacingBetweenSlices",
        "SliceThickness",
    ),
    "IMAGE": (
        "SOPClassUID",
        "SOPInstanceUID",
        "InstanceNumber",
        "Rows",
        "Columns",
        "NumberOfFrames",
        "PixelSpacing",
    ),
}
#: Study attributes returned with series and instances searched across studies.
_STUDY_FIELDS = ("StudyInstanceUID", "StudyDate", "StudyTime", "AccessionNumber", "PatientID")
_CONTROL = frozenset({"limit", "offset", "fuzzymatching", "includefield"})
EXTENSIONS = frozenset({"pixel_spacing_mm", "spacing_between_slices_mm", "verdict", "finding"})
VERDICTS = frozenset({"ok", *(s.value for s in SEVERITY_ORDER)})
_TAG = re.compile(r"[0-9A-Fa-f]{8}")
#: The private block's elements in QIDO-RS answers (group 0009, block 0x10).
PRIVATE_CREATOR_TAG = "00090010"
VERDICT_TAG = "00091010"
CODES_TAG = "00091011"


class QidoError(ValueError):
    """A QIDO-RS request the node refuses (HTTP 400), naming the parameter."""


@dataclass(frozen=True)
class Range:
    """Inclusive bounds in mm (``None``: open)."""

    low: float | None
    high: float | None

    def holds(self, value: float) -> bool:
        return (self.low is None or value >= self.low) and (self.high is None or value <= self.high)


@dataclass
class QidoQuery:
    """A parsed QIDO-RS request."""

    level: Level
    identifier: Dataset
    limit: int
    offset: int = 0
    warnings: list[str] = field(default_factory=list)
    pixel_spacing: list[str] | None = None
    pixel_spacing_mm: Range | None = None
    spacing_between_slices_mm: Range | None = None
    verdicts: frozenset[str] = frozenset()
    findings: frozenset[str] = frozenset()
    #: ``finding=!CODE``: codes that must be absent.
    without: frozenset[str] = frozenset()

    @property
    def filtered(self) -> bool:
        return bool(
            self.pixel_spacing
            or self.pixel_spacing_mm
            or self.spacing_between_slices_mm
            or self.verdicts
            or self.findings
            or self.without
        )


def _keyword(name: str) -> str:
    if _TAG.fullmatch(name):
        keyword = keyword_for_tag(int(name, 16))
        if not keyword:
            raise QidoError(f"{name}: not a tag of the DICOM dictionary")
        return str(keyword)
    if tag_for_keyword(name) is None:
        raise QidoError(
            f"unknown parameter {name!r} (not a DICOM keyword, tag or QIDO-RS parameter)"
        )
    return name


def _int(name: str, text: str, low: int, high: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise QidoError(f"{name}: {text!r} is not an integer") from None
    if not low <= value <= high:
        raise QidoError(f"{name}: {value} is not in {low}..{high}")
    return value


def _range(name: str, text: str) -> Range:
    low, sep, high = text.strip().partition("-")
    try:
        lo = float(low) if low.strip() else None
        hi = float(high) if high.strip() else None
    except ValueError:
        raise QidoError(f"{name}: {text!r} is not a number or a range a-b, -b, a-") from None
    if not sep:
        hi = lo
    if lo is None and hi is None:
        raise QidoError(f"{name}: an empty range")
    return Range(lo, hi)


def _ds_values(name: str, text: str) -> list[str]:
    parts = [p.strip() for p in text.split("\\")]
    if not 1 <= len(parts) <= 2:
        raise QidoError(f"{name}: one value, or row\\column")
    for part in parts:
        try:
            if not Decimal(part).is_finite() or Decimal(part) <= 0:
                raise InvalidOperation
        except InvalidOperation:
            raise QidoError(f"{name}: {part!r} is not a positive decimal number") from None
    return parts


def parse_query(
    level: Level,
    params: Sequence[tuple[str, str]],
    *,
    study: str | None = None,
    series: str | None = None,
    max_results: int = 10000,
) -> QidoQuery:
    """Turn QIDO-RS query parameters into a C-FIND identifier and the extension filters.

    ``study``/``series``: the UIDs of the resource path. Raises :class:`QidoError` for an
    unknown parameter, a bad ``limit``/``offset``, or a bad extension value."""
    ds = Dataset()
    ds.add_new(QUERY_RETRIEVE_LEVEL, "CS", level)
    query = QidoQuery(level, ds, limit=max_results or 10000)
    fields = list(DEFAULT_FIELDS[level])
    if level != "STUDY" and study is None:
        fields += _STUDY_FIELDS
    if level == "IMAGE" and series is None:
        fields += ("SeriesInstanceUID", "Modality")
    values: dict[str, str] = {}
    for name, value in params:
        if name == "limit":
            query.limit = _int(name, value, 1, max_results or 2**31)
        elif name == "offset":
            query.offset = _int(name, value, 0, 2**31)
        elif name == "fuzzymatching":
            if value.lower() not in ("true", "false"):
                raise QidoError(f"fuzzymatching: {value!r} is not true or false")
            if value.lower() == "true":
                query.warnings.append("fuzzymatching=true is not supported: exact matching used")
        elif name == "includefield":
            for item in (v.strip() for v in value.split(",")):
                if item == "all":
                    fields += [k.keyword for k in KEYS if resolve_key(k.keyword, level)]
                elif item:
                    fields.append(_keyword(item))
        elif name in ("pixel_spacing_mm", "spacing_between_slices_mm"):
            setattr(query, name, _range(name, value))
        elif name == "verdict":
            wanted = {v.strip().lower() for v in value.split(",") if v.strip()}
            if not wanted or wanted - VERDICTS:
                raise QidoError(f"verdict: {value!r}; one or more of {', '.join(sorted(VERDICTS))}")
            query.verdicts = frozenset(wanted)
        elif name == "finding":
            codes = [v.strip() for v in value.split(",") if v.strip()]
            if not codes or any(not re.fullmatch(r"!?[A-Z0-9_]+", c) for c in codes):
                raise QidoError(f"finding: {value!r}; finding codes, ! before one to exclude it")
            query.findings = frozenset(c for c in codes if not c.startswith("!"))
            query.without = frozenset(c[1:] for c in codes if c.startswith("!"))
        else:
            keyword = _keyword(name)
            if keyword == "PixelSpacing":
                query.pixel_spacing = _ds_values(name, value)
                fields.append(keyword)
                continue
            if keyword in values:
                raise QidoError(f"{name}: given more than once")
            values[keyword] = value
    if level == "STUDY" and query.filtered:
        raise QidoError(
            "PixelSpacing, pixel_spacing_mm, spacing_between_slices_mm, verdict and finding "
            "are series or instance search parameters (/series, /instances)"
        )
    if query.spacing_between_slices_mm is not None:
        if level != "SERIES":
            raise QidoError("spacing_between_slices_mm: a series search parameter (/series)")
        fields.append("SpacingBetweenSlices")
    if query.pixel_spacing_mm is not None:
        fields.append("PixelSpacing")
    if study is not None:
        values["StudyInstanceUID"] = study
    if series is not None:
        values["SeriesInstanceUID"] = series
    for keyword in dict.fromkeys([*fields, *values]):
        tag = tag_for_keyword(keyword)
        assert tag is not None
        vr = str(dictionary_VR(tag))
        if vr == "SQ":
            raise QidoError(f"{keyword}: sequence attributes cannot be searched or returned")
        ds.add_new(tag, vr, values.get(keyword))
    return query


class QidoService:
    """Answers QIDO-RS searches with the node's :class:`~scp.services.find.FindService`."""

    def __init__(self, find: FindService, sessions: sessionmaker[Session]) -> None:
        self.find = find
        self.sessions = sessions

    def search(self, query: QidoQuery, base_url: str) -> list[dict[str, Any]]:
        """The matches in the DICOM JSON model (PS3.18 F.2), ``offset``/``limit`` applied.

        Raises :class:`QidoError` for a key value the C-FIND rules refuse (a wild card in
        a UID, a date that is not one)."""
        try:
            request = parse_identifier(query.identifier, relational=True)
        except FindError as exc:
            raise QidoError(exc.comment) from None
        ignored = [k for k in request.unsupported if k != "PixelSpacing"]
        if ignored:
            query.warnings.append(f"not supported, ignored: {', '.join(sorted(set(ignored)))}")
        out: list[dict[str, Any]] = []
        skipped = 0
        batch: list[tuple[Hit, Dataset]] = []
        for pair in self.find.matched(request):
            batch.append(pair)
            if len(batch) >= 200:
                skipped = self._take(query, batch, base_url, out, skipped)
                batch = []
                if len(out) >= query.limit:
                    break
        if batch and len(out) < query.limit:
            self._take(query, batch, base_url, out, skipped)
        return out[: query.limit]

    def _take(
        self,
        query: QidoQuery,
        batch: list[tuple[Hit, Dataset]],
        base_url: str,
        out: list[dict[str, Any]],
        skipped: int,
    ) -> int:
        private = self._private(query.level, [h for h, _ in batch])
        for hit, ds in batch:
            verdict, codes = private.get(id(hit), ("ok", []))
            if not _passes(query, hit, ds, verdict, codes):
                continue
            if skipped < query.offset:
                skipped += 1
                continue
            out.append(_json(query.level, hit, ds, verdict, codes, base_url))
            if len(out) >= query.limit:
                break
        return skipped

    def _private(self, level: Level, hits: list[Hit]) -> dict[int, tuple[str, list[str]]]:
        """Verdict and finding codes per hit (the worst instance verdict of a series)."""
        result: dict[int, tuple[str, list[str]]] = {}
        if level == "STUDY":
            return result
        with self.sessions() as session:
            if level == "SERIES":
                ids = [h.series.id for h in hits if h.series is not None]
                verdicts: dict[int, set[str]] = defaultdict(set)
                for series_id, verdict in session.execute(
                    select(Instance.series_id, Instance.verdict)
                    .where(Instance.series_id.in_(ids))
                    .distinct()
                ):
                    verdicts[series_id].add(verdict)
                for hit in hits:
                    assert hit.series is not None
                    codes = [c for c in (hit.series.finding_codes or "").split(",") if c]
                    result[id(hit)] = (_worst(verdicts[hit.series.id]), sorted(codes))
                return result
            inst_ids = [h.instance.id for h in hits if h.instance is not None]
            found: dict[int, set[str]] = defaultdict(set)
            for instance_id, code in session.execute(
                select(InstanceFinding.instance_id, InstanceFinding.code).where(
                    InstanceFinding.instance_id.in_(inst_ids)
                )
            ):
                found[instance_id].add(code)
        for hit in hits:
            assert hit.instance is not None
            result[id(hit)] = (hit.instance.verdict or "ok", sorted(found[hit.instance.id]))
        return result


def _worst(verdicts: set[str]) -> str:
    for severity in SEVERITY_ORDER:
        if severity.value in verdicts:
            return severity.value
    return "ok"


def agree(given: str, value: float) -> bool:
    """Rulebook rule 31: ``value`` equals the decimal text ``given`` to the precision of
    ``given`` (half a unit of its last digit, inclusive): ``0.703`` agrees with
    0.703125, ``0.976562`` with 0.9765625. No rounding of both sides."""
    exact = Decimal(given)
    exponent = exact.as_tuple().exponent
    step = Decimal(1).scaleb(exponent if isinstance(exponent, int) else 0)
    return abs(Decimal(repr(float(value))) - exact) <= step / 2


def _floats(value: Any) -> list[float] | None:
    """A DS value of a response identifier as numbers; ``None`` when empty or unreadable."""
    if value is None or value == "":
        return None
    raw = list(value) if isinstance(value, list | tuple | MultiValue) else [value]
    try:
        return [float(v) for v in raw]
    except (TypeError, ValueError):
        return None


def _passes(query: QidoQuery, hit: Hit, ds: Dataset, verdict: str, codes: list[str]) -> bool:
    if not query.filtered:
        return True
    if query.pixel_spacing or query.pixel_spacing_mm:
        spacing = _floats(ds.get("PixelSpacing"))
        if not spacing or len(spacing) != 2:
            return False
        if query.pixel_spacing:
            given = query.pixel_spacing * (2 if len(query.pixel_spacing) == 1 else 1)
            if not all(agree(g, v) for g, v in zip(given, spacing, strict=True)):
                return False
        if query.pixel_spacing_mm and not all(query.pixel_spacing_mm.holds(v) for v in spacing):
            return False
    if query.spacing_between_slices_mm is not None:
        z = _floats(ds.get("SpacingBetweenSlices"))
        if not z or not query.spacing_between_slices_mm.holds(z[0]):
            return False
    if query.verdicts and verdict not in query.verdicts:
        return False
    if query.findings or query.without:
        series = hit.series
        found = set(codes)  # the instance's own codes at IMAGE level, the series' at SERIES
        if series is not None:
            found.update((series.finding_codes or "").split(","))
        if query.findings and not found & query.findings:
            return False
        if found & query.without:
            return False
    return True


def _json(
    level: Level, hit: Hit, ds: Dataset, verdict: str, codes: list[str], base_url: str
) -> dict[str, Any]:
    del ds[QUERY_RETRIEVE_LEVEL]
    out: dict[str, Any] = ds.to_json_dict()
    study = hit.study.study_instance_uid
    url = f"{base_url}/studies/{study}"
    if level != "STUDY" and hit.series is not None:
        url += f"/series/{hit.series.series_instance_uid}"
        if level == "IMAGE" and hit.instance is not None:
            url += f"/instances/{hit.instance.sop_instance_uid}"
        out[PRIVATE_CREATOR_TAG] = {"vr": "LO", "Value": [DEFAULT_CREATOR]}
        out[VERDICT_TAG] = {"vr": "LO", "Value": [verdict]}
        out[CODES_TAG] = {"vr": "LO", "Value": codes} if codes else {"vr": "LO"}
    out["00081190"] = {"vr": "UR", "Value": [url]}
    return dict(sorted(out.items()))
