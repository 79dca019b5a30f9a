"""C-FIND SCP over the index: Study Root Query/Retrieve Information Model - FIND.

SOP Class 1.2.840.10008.5.1.4.1.2.2.1 (PS3.4 C.6.2), levels STUDY, SERIES and IMAGE
(PS3.4 C.6.2.1), baseline hierarchical search (PS3.4 C.4.1.3.1): a SERIES query names its
study by Study Instance UID (0020,000D), an IMAGE query also names its series by Series
Instance UID (0020,000E), never empty or wild (a list of UIDs is accepted there too, a
relaxation of the single value the baseline asks for).

Matching (PS3.4 C.2.2.2) is translated into SQL, so the database does the filtering:

* Single Value Matching (C.2.2.2.1): exact and case-sensitive; leading and trailing
  spaces are padding.  Integer keys (IS, US) compare as numbers.
* List of UID Matching (C.2.2.2.2): ``uid1\\uid2`` becomes ``IN``.
* Universal Matching (C.2.2.2.3): a zero-length value (or only ``*``, C.2.2.2.4 note 1)
  adds no condition; the value is returned.
* Wild Card Matching (C.2.2.2.4): ``*`` and ``?`` in string keys (AE, CS, LO, SH...),
  case-sensitive: ``GLOB`` on SQLite (its ``LIKE`` ignores case), ``LIKE`` with
  ``%``/``_``/``\\`` escaped elsewhere.  Not allowed in UIDs, dates, times or numbers.
* Range Matching (C.2.2.2.5): DA and TM as ``a-b``, ``-b`` or ``a-``; a partial upper time
  bound (``-10``, ``-1030``) takes in the whole hour or minute.
* Several values in a key that is not a UID (``CT\\MR``): without Extended Negotiation of
  Multiple Value Matching their meaning is undefined (PS3.4 C.2.2.2.8 note 4); the node
  reads them as *any of* -- ``ModalitiesInStudy=CT\\MR`` finds studies with a CT or an
  MR series (the negotiated meaning, *all of*, is not offered).
* Unknown values (PS3.4 C.2.2.1.2): an entity whose Required or supported Optional Key
  is empty matches any value of that key (``[query] match_unknown``).

Responses (PS3.4 C.4.1.1.3.2): Query/Retrieve Level (0008,0052), every supported key of
the request with the entity's value (zero length when unknown), and Specific Character
Set (0008,0005) when asked for or needed (``ISO_IR 192`` when a value is not ASCII).
Keys the node does not support are left out and the pending responses carry 0xFF01
(PS3.4 C.4.1.1.4).  Keys of a level above the query level that the index holds
(Patient ID at SERIES level, Modality at IMAGE level) are matched and returned too.

Spacing, the reason this node exists:

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

Results stream in keyset batches, each read in its own short session (no transaction
stays open while responses travel), and stop at ``[query] max_results`` with 0xA700.
"""

from __future__ import annotations

import logging
import re
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, cast

from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.tag import BaseTag, Tag
from sqlalchemy import ColumnElement, Integer, Select, and_, exists, func, or_, select
from sqlalchemy.orm import Session, aliased, defer, sessionmaker

from scp import status
from scp.metrics import METRICS
from scp.pipeline.ds import DS_MAX_BYTES, DS_PATTERN, format_ds
from scp.services.series_query import IndexQueries
from storage.models import Instance, InstanceAction, Series, Study

log = logging.getLogger("spacing_scp.find")

#: Study Root Query/Retrieve Information Model - FIND (PS3.4 C.6.2).
SOP_CLASS_UID = "1.2.840.10008.5.1.4.1.2.2.1"

Level = Literal["STUDY", "SERIES", "IMAGE"]
LEVELS: tuple[Level, ...] = ("STUDY", "SERIES", "IMAGE")
#: Unique Key of each level (PS3.4 C.6.2.1, Tables C.6-5, C.6-6, C.6-7).
UNIQUE_KEYS: dict[Level, str] = {
    "STUDY": "StudyInstanceUID",
    "SERIES": "SeriesInstanceUID",
    "IMAGE": "SOPInstanceUID",
}
#: Matches read per database round trip.
BATCH_SIZE = 200
UTF8 = "ISO_IR 192"

QUERY_RETRIEVE_LEVEL = Tag(0x0008, 0x0052)
SPECIFIC_CHARACTER_SET = Tag(0x0008, 0x0005)

Kind = Literal["uid", "string", "date", "time", "number", "return"]
FindResponse = tuple[int | Dataset, Dataset | None]

_DA = re.compile(r"^[0-9]{8}$")
_DA_LEGACY = re.compile(r"^[0-9]{4}\.[0-9]{2}\.[0-9]{2}$")  # ACR-NEMA, PS3.5 6.2 DA note
_TM = re.compile(r"^[0-9]{2}([0-9]{2}([0-9]{2}(\.[0-9]{1,6})?)?)?$")


def _tag(keyword: str) -> BaseTag:
    value = tag_for_keyword(keyword)
    if value is None:  # pragma: no cover - KEYS holds dictionary keywords only
        raise KeyError(keyword)
    return Tag(value)


class FindError(Exception):
    """A request the node refuses: answered with one failure response, no identifier."""

    def __init__(self, code: int, comment: str, tag: int | None = None) -> None:
        super().__init__(comment)
        self.code = code
        self.comment = comment
        self.tag = tag

    def status_dataset(self) -> Dataset:
        rsp = Dataset()
        rsp.Status = self.code
        # Error Comment (0000,0902) is LO: 64 characters at most (PS3.7 C.4.2.1.4).
        rsp.ErrorComment = self.comment.replace("\\", "/")[:64]
        if self.tag is not None:
            rsp.OffendingElement = [self.tag]
        return rsp


@dataclass
class Hit:
    """One matching entity with its parents, and the values computed for its batch."""

    study: Study
    series: Series | None = None
    instance: Instance | None = None
    computed: dict[str, Any] = field(default_factory=dict)

    def entity(self, level: Level) -> Any:
        return {"STUDY": self.study, "SERIES": self.series, "IMAGE": self.instance}[level]


@dataclass(frozen=True)
class KeyDef:
    """A supported key: its level, how it matches, where its value comes from."""

    keyword: str
    level: Level
    kind: Kind
    #: Index column (matching and value); ``None`` for computed keys.
    column: Any = None
    #: Filled per batch into :attr:`Hit.computed` (counts, measured spacing...).
    computed: bool = False

    @property
    def tag(self) -> BaseTag:
        return _tag(self.keyword)

    @property
    def vr(self) -> str:
        return str(dictionary_VR(self.tag))

    @property
    def own_level_only(self) -> bool:
        """Computed and return-only keys answer only at their own level."""
        return self.computed or self.kind == "return"

    def value(self, hit: Hit) -> Any:
        if self.computed:
            return hit.computed.get(self.keyword)
        return getattr(hit.entity(self.level), self.column.key)


KEYS: tuple[KeyDef, ...] = (
    # STUDY level (PS3.4 Table C.6-5; patient keys sit at the study level in Study Root)
    KeyDef("StudyInstanceUID", "STUDY", "uid", Study.study_instance_uid),
    KeyDef("PatientID", "STUDY", "string", Study.patient_id),
    KeyDef("AccessionNumber", "STUDY", "string", Study.accession_number),
    KeyDef("StudyDate", "STUDY", "date", Study.study_date),
    KeyDef("StudyTime", "STUDY", "time", Study.study_time),
    KeyDef("StudyDescription", "STUDY", "string", Study.study_description),
    KeyDef("ModalitiesInStudy", "STUDY", "string", computed=True),
    KeyDef("NumberOfStudyRelatedSeries", "STUDY", "return", computed=True),
    KeyDef("NumberOfStudyRelatedInstances", "STUDY", "return", computed=True),
    # SERIES level (PS3.4 Table C.6-6)
    KeyDef("SeriesInstanceUID", "SERIES", "uid", Series.series_instance_uid),
    KeyDef("Modality", "SERIES", "string", Series.modality),
    KeyDef("SeriesNumber", "SERIES", "number", Series.series_number),
    KeyDef("SeriesDescription", "SERIES", "string", Series.series_description),
    KeyDef("Manufacturer", "SERIES", "string", Series.manufacturer),
    KeyDef("ManufacturerModelName", "SERIES", "string", Series.manufacturer_model_name),
    KeyDef("StationName", "SERIES", "string", Series.station_name),
    KeyDef("NumberOfSeriesRelatedInstances", "SERIES", "return", Series.instance_count),
    KeyDef("SpacingBetweenSlices", "SERIES", "return", computed=True),
    KeyDef("PixelSpacing", "SERIES", "return", computed=True),
    KeyDef("SliceThickness", "SERIES", "return", computed=True),
    # IMAGE level (PS3.4 Table C.6-7)
    KeyDef("SOPInstanceUID", "IMAGE", "uid", Instance.sop_instance_uid),
    KeyDef("SOPClassUID", "IMAGE", "uid", Instance.sop_class_uid),
    KeyDef("InstanceNumber", "IMAGE", "number", Instance.instance_number),
    KeyDef("Rows", "IMAGE", "number", Instance.rows),
    KeyDef("Columns", "IMAGE", "number", Instance.columns),
    KeyDef("NumberOfFrames", "IMAGE", "number", Instance.number_of_frames),
    KeyDef("PixelSpacing", "IMAGE", "return", computed=True),
)
_SERIES_GEOMETRY_KEYS = frozenset({"SpacingBetweenSlices", "PixelSpacing", "SliceThickness"})


def resolve_key(keyword: str, level: Level) -> KeyDef | None:
    """The key ``keyword`` means at a ``level`` query: its own level first, then above."""
    depth = LEVELS.index(level)
    for candidate_level in reversed(LEVELS[: depth + 1]):
        for key in KEYS:
            if key.keyword != keyword or key.level != candidate_level:
                continue
            if candidate_level == level or not key.own_level_only:
                return key
    return None


# -------------------------------------------------------------------------------- request


@dataclass(frozen=True)
class Term:
    """One value of a matching key: ``eq``, ``wild``, ``range`` or ``int``."""

    op: str
    a: Any = None
    b: Any = None


@dataclass
class Criterion:
    key: KeyDef
    terms: list[Term]


@dataclass
class FindRequest:
    """A parsed, validated identifier (PS3.4 C.4.1.1.3.1)."""

    level: Level
    returns: list[KeyDef] = field(default_factory=list)
    criteria: list[Criterion] = field(default_factory=list)
    #: Keys neither matched nor returned, or given a value that is not matched (0xFF01).
    unsupported: list[str] = field(default_factory=list)
    charset_requested: bool = False
    charset: Any = None

    @property
    def wanted(self) -> set[str]:
        return {k.keyword for k in self.returns if k.computed}


def _texts(ds: Dataset, tag: BaseTag) -> list[str] | None:
    """The values of one key as text; ``None`` for a zero-length (universal) key."""
    value = ds[tag].value
    if value is None or value == "" or value == b"":
        return None
    if isinstance(value, bytes):
        parts = value.decode("latin-1").split("\\")
    elif isinstance(value, MultiValue | list | tuple):
        parts = [str(v) for v in value]
    else:
        parts = [str(value)]
    parts = [p.strip(" \x00") for p in parts]
    return parts if any(parts) else None


def _date(text: str, key: KeyDef) -> str:
    if _DA_LEGACY.match(text):
        text = text.replace(".", "")
    if not _DA.match(text) or not ("01" <= text[4:6] <= "12" and "01" <= text[6:8] <= "31"):
        raise FindError(
            status.FIND_ERROR_IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS,
            f"{key.keyword}: {text!r} is not a date YYYYMMDD",
            int(key.tag),
        )
    return text


def _time(text: str, key: KeyDef) -> str:
    text = text.replace(":", "")  # ACR-NEMA HH:MM:SS (PS3.5 6.2 TM note)
    if not _TM.match(text) or text[:2] > "23" or text[2:4] > "59" or text[4:6] > "60":
        raise FindError(
            status.FIND_ERROR_IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS,
            f"{key.keyword}: {text!r} is not a time HHMMSS.FFFFFF",
            int(key.tag),
        )
    return text


def _terms(key: KeyDef, parts: Sequence[str]) -> list[Term] | None:
    """Validate the values of a matching key; ``None`` means universal (C.2.2.2.3)."""
    if any(p and set(p) == {"*"} for p in parts):
        return None  # "*" is universal matching (C.2.2.2.4, note 1)
    values = [p for p in parts if p]
    if not values:
        return None
    bad = status.FIND_ERROR_IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS
    terms: list[Term] = []
    for value in values:
        wild = "*" in value or "?" in value
        if key.kind == "string":
            terms.append(Term("wild" if wild else "eq", value))
            continue
        if wild:
            raise FindError(
                bad, f"{key.keyword}: no wild cards in this key (C.2.2.2.4)", int(key.tag)
            )
        if key.kind == "uid":
            terms.append(Term("eq", value))
        elif key.kind in ("date", "time"):
            parse = _date if key.kind == "date" else _time
            if "-" not in value:
                terms.append(Term("eq", parse(value, key)))
                continue
            low, _, high = (v.strip() for v in value.partition("-"))
            if "-" in high or not (low or high):
                raise FindError(bad, f"{key.keyword}: {value!r} is not a range", int(key.tag))
            terms.append(
                Term("range", parse(low, key) if low else None, parse(high, key) if high else None)
            )
        elif key.kind == "number":
            try:
                terms.append(Term("int", int(value), value))
            except ValueError:
                raise FindError(
                    bad, f"{key.keyword}: {value!r} is not an integer", int(key.tag)
                ) from None
    return terms


def parse_identifier(ds: Dataset) -> FindRequest:
    """Check an identifier against the Study Root model (PS3.4 C.4.1.1.3.1, C.6.2.1).

    Raises :class:`FindError` (0xA900 Identifier Does Not Match SOP Class) for a missing or
    unknown Query/Retrieve Level, a missing unique key of a level above the query level
    (PS3.4 C.4.1.3.1.1), or a value its key cannot match.
    """
    bad = status.FIND_ERROR_IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS
    try:
        raw_level = ds.get(QUERY_RETRIEVE_LEVEL)
        level_text = str(raw_level.value if raw_level is not None else "").strip().upper()
    except Exception:
        level_text = ""
    if level_text not in LEVELS:
        raise FindError(
            bad,
            "Query/Retrieve Level must be STUDY, SERIES or IMAGE",
            int(QUERY_RETRIEVE_LEVEL),
        )
    level = cast(Level, level_text)
    request = FindRequest(level=level)
    for tag in sorted(ds.keys()):
        if tag == QUERY_RETRIEVE_LEVEL or tag.element == 0:
            continue  # group lengths are not keys
        if tag == SPECIFIC_CHARACTER_SET:
            request.charset_requested = True
            request.charset = ds[tag].value
            continue
        keyword = "" if tag.is_private else keyword_for_tag(tag)
        key = resolve_key(keyword, level) if keyword else None
        if key is None:
            request.unsupported.append(keyword or str(tag))
            continue
        try:
            parts = _texts(ds, tag)
        except Exception:
            raise FindError(bad, f"{keyword}: the value cannot be read", int(tag)) from None
        request.returns.append(key)
        if parts is None:
            continue
        if key.kind == "return":
            request.unsupported.append(key.keyword)  # matching not supported: returned only
            continue
        terms = _terms(key, parts)
        if terms is not None:
            request.criteria.append(Criterion(key, terms))
    for upper in LEVELS[: LEVELS.index(level)]:
        keyword = UNIQUE_KEYS[upper]
        criterion = next((c for c in request.criteria if c.key.keyword == keyword), None)
        if criterion is None:
            raise FindError(
                bad,
                f"{keyword} is required for a {level} query (PS3.4 C.4.1.3.1)",
                int(_tag(keyword)),
            )
    return request


# -------------------------------------------------------------------------------- SQL


def _wildcard(column: Any, pattern: str, dialect: str) -> ColumnElement[bool]:
    """Case-sensitive ``*``/``?`` matching (C.2.2.2.4) with the pattern's own characters
    taken literally."""
    if dialect == "sqlite":
        # SQLite's LIKE ignores ASCII case; GLOB does not. "[" is GLOB's only other
        # special character: "[[]" is a literal "[".
        return column.op("GLOB")(pattern.replace("[", "[[]"))
    like = pattern.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return column.like(like.replace("*", "%").replace("?", "_"), escape="\\")


def _term_condition(key: KeyDef, column: Any, term: Term, dialect: str) -> ColumnElement[bool]:
    if term.op == "wild":
        return _wildcard(column, term.a, dialect)
    if term.op == "int":
        if isinstance(column.type, Integer):
            return column == term.a
        return or_(column == term.b, column == str(term.a))
    if term.op == "range":
        parts = []
        if term.a is not None:
            parts.append(column >= term.a)
        if term.b is not None:
            upper = column <= term.b
            if key.kind == "time":  # "-10" takes in 10:59:59.999999 (partial precision)
                upper = or_(upper, column.startswith(term.b, autoescape=True))
            parts.append(upper)
        return and_(*parts)
    return column == term.a


def _unknown(column: Any) -> ColumnElement[bool]:
    if isinstance(column.type, Integer):
        return column.is_(None)
    return or_(column.is_(None), column == "")


def _criterion_sql(criterion: Criterion, dialect: str, match_unknown: bool) -> ColumnElement[bool]:
    key = criterion.key
    if key.keyword == "ModalitiesInStudy":
        # Modalities in Study (0008,0061, PS3.4 C.3.4): a study matches when one of its
        # series does.
        other = aliased(Series)
        cond = or_(*(_term_condition(key, other.modality, t, dialect) for t in criterion.terms))
        clause: ColumnElement[bool] = exists(
            select(other.id).where(other.study_id == Study.id, cond)
        )
        if match_unknown:
            known = select(other.id).where(
                other.study_id == Study.id, other.modality.is_not(None), other.modality != ""
            )
            clause = or_(clause, ~exists(known))
        return clause
    column = key.column
    cond = or_(*(_term_condition(key, column, t, dialect) for t in criterion.terms))
    if match_unknown and key.kind != "uid":
        cond = or_(cond, _unknown(column))
    return cond


def _statement(request: FindRequest, dialect: str, match_unknown: bool) -> tuple[Select[Any], Any]:
    """The query of the request's level and the column its batches are keyed on."""
    level = request.level
    stmt: Any
    if level == "STUDY":
        stmt, id_column = select(Study), Study.id
    elif level == "SERIES":
        stmt = select(Series, Study).join(Study, Series.study_id == Study.id)
        id_column = Series.id
        if not request.wanted & _SERIES_GEOMETRY_KEYS:
            stmt = stmt.options(defer(Series.geometry_state))
    else:
        stmt = (
            select(Instance, Series, Study)
            .join(Series, Instance.series_id == Series.id)
            .join(Study, Series.study_id == Study.id)
            .options(defer(Instance.geometry), defer(Series.geometry_state))
        )
        id_column = Instance.id
    for criterion in request.criteria:
        stmt = stmt.where(_criterion_sql(criterion, dialect, match_unknown))
    return stmt, id_column


# -------------------------------------------------------------------------------- values


def _ds_text(text: str | None) -> list[str] | None:
    """Stored DS text as response values; ``None`` if absent or not a valid DS (PS3.5 6.2)."""
    if not text:
        return None
    parts = [p.strip(" \x00") for p in text.split("\\")]
    for part in parts:
        if not DS_PATTERN.match(part) or len(part) > DS_MAX_BYTES:
            return None
    return parts


def _ds(value: float | None) -> str | None:
    return None if value is None else format_ds(value)


def _element_value(vr: str, value: Any) -> Any:
    """An index value in the form pydicom encodes for ``vr``; ``None`` is zero length."""
    if value is None or value == "":
        return None
    if vr in ("IS", "US"):
        try:
            number = int(str(value).strip())
        except ValueError:
            return None
        return str(number) if vr == "IS" else number
    if isinstance(value, list):
        return value
    return str(value) if vr != "DS" else value


def _is_ascii(value: Any) -> bool:
    if isinstance(value, str):
        return value.isascii()
    if isinstance(value, list):
        return all(_is_ascii(v) for v in value)
    return True


# -------------------------------------------------------------------------------- service


class FindService:
    """Answers C-FIND requests of the Study Root model from the index (PS3.4 C.4.1.3)."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        queries: IndexQueries,
        *,
        max_results: int = 10000,
        match_unknown: bool = True,
        batch_size: int = BATCH_SIZE,
    ) -> None:
        self.sessions = sessions
        self.queries = queries
        self.max_results = max_results
        self.match_unknown = match_unknown
        self.batch_size = batch_size

    # -- pynetdicom ----------------------------------------------------------------------
    def handle(self, event: Any) -> Iterator[FindResponse]:
        """The ``evt.EVT_C_FIND`` handler: (status, identifier) pairs, pendings first."""
        started = time.monotonic()
        calling = event.assoc.requestor.ae_title
        if isinstance(calling, bytes):
            calling = calling.decode("ascii", errors="replace")
        outcome: dict[str, Any] = {"level": "-", "matches": 0, "status": status.SUCCESS}
        try:
            try:
                identifier = event.identifier
            except Exception:
                log.warning("C-FIND from %s: identifier cannot be decoded", calling)
                outcome["status"] = status.FIND_ERROR_UNABLE_TO_PROCESS
                yield (
                    FindError(outcome["status"], "identifier cannot be decoded").status_dataset(),
                    None,
                )
                return
            yield from self.find(identifier, lambda: bool(event.is_cancelled), outcome)
        except GeneratorExit:  # the association ended while responses were being sent
            outcome["end"] = " (association ended)"
            raise
        finally:
            ms = (time.monotonic() - started) * 1000.0
            code = int(outcome["status"])
            log.info(
                "C-FIND level=%s from=%s matches=%d status=0x%04X%s ms=%.1f",
                outcome["level"],
                str(calling).strip(),
                outcome["matches"],
                code,
                outcome.get("end", ""),
                ms,
            )
            METRICS.inc(
                "spacing_scp_find_total", level=str(outcome["level"]), status=f"0x{code:04X}"
            )
            METRICS.observe_ms("spacing_scp_find_seconds", ms)

    # -- the query -----------------------------------------------------------------------
    def find(
        self,
        identifier: Dataset,
        is_cancelled: Callable[[], bool] = lambda: False,
        outcome: dict[str, Any] | None = None,
    ) -> Iterator[FindResponse]:
        """C-FIND responses for ``identifier``: pendings, then one final status.

        The final Success is left to pynetdicom (it sends 0x0000 when the generator ends);
        Cancel (0xFE00), 0xA700 (more than ``max_results`` matches), 0xA900 and 0xC000 are
        yielded here.
        """
        outcome = outcome if outcome is not None else {}
        outcome.setdefault("matches", 0)
        outcome["status"] = status.SUCCESS
        try:
            request = parse_identifier(identifier)
            outcome["level"] = request.level
            pending = (
                status.FIND_PENDING_WARNING_OPTIONAL_KEYS
                if request.unsupported
                else status.FIND_PENDING
            )
            limit = self.max_results + 1 if self.max_results > 0 else None
            for match in self.matches(request, limit):
                if is_cancelled():
                    outcome["status"] = status.FIND_CANCEL
                    yield status.FIND_CANCEL, None
                    return
                if self.max_results > 0 and outcome["matches"] >= self.max_results:
                    outcome["status"] = status.FIND_REFUSED_OUT_OF_RESOURCES
                    yield (
                        FindError(
                            status.FIND_REFUSED_OUT_OF_RESOURCES,
                            f"more than {self.max_results} matches: refine the query",
                        ).status_dataset(),
                        None,
                    )
                    return
                outcome["matches"] += 1
                yield pending, match
            if is_cancelled():
                outcome["status"] = status.FIND_CANCEL
                yield status.FIND_CANCEL, None
        except FindError as err:
            outcome["status"] = err.code
            log.info("C-FIND refused: %s", err.comment)
            yield err.status_dataset(), None
        except Exception as exc:
            log.exception("C-FIND failed")
            outcome["status"] = status.FIND_ERROR_UNABLE_TO_PROCESS
            yield (
                FindError(
                    status.FIND_ERROR_UNABLE_TO_PROCESS, f"internal error: {type(exc).__name__}"
                ).status_dataset(),
                None,
            )

    def matches(self, request: FindRequest, limit: int | None = None) -> Iterator[Dataset]:
        """Response identifiers, read in keyset batches of short sessions (ordered by id)."""
        last_id = 0
        produced = 0
        statement: Select[Any] | None = None
        id_column: Any = None
        while limit is None or produced < limit:
            size = self.batch_size if limit is None else min(self.batch_size, limit - produced)
            with self.sessions() as session:
                if statement is None:
                    dialect = session.get_bind().dialect.name
                    statement, id_column = _statement(request, dialect, self.match_unknown)
                rows = session.execute(
                    statement.where(id_column > last_id).order_by(id_column).limit(size)
                ).all()
                hits = [self._hit(request.level, row) for row in rows]
                self._compute(session, request, hits)
                identifiers = [self._identifier(request, hit) for hit in hits]
                if hits:
                    last_id = hits[-1].entity(request.level).id
            yield from identifiers
            produced += len(identifiers)
            if len(rows) < size:
                return

    @staticmethod
    def _hit(level: Level, row: Any) -> Hit:
        if level == "STUDY":
            return Hit(study=row[0])
        if level == "SERIES":
            return Hit(study=row[1], series=row[0])
        return Hit(study=row[2], series=row[1], instance=row[0])

    # -- computed values -----------------------------------------------------------------
    def _compute(self, session: Session, request: FindRequest, hits: list[Hit]) -> None:
        wanted = request.wanted
        if not hits or not wanted:
            return
        if request.level == "STUDY":
            self._study_values(session, hits, wanted)
        elif request.level == "SERIES":
            self._series_values(session, hits)
        elif "PixelSpacing" in wanted:
            self._stored_pixel_spacing(session, hits)

    @staticmethod
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

    def _series_values(self, session: Session, hits: list[Hit]) -> None:
        """Spacing Between Slices as measured, Pixel Spacing and Slice Thickness of a batch
        of series, from the same SERIES summary the HTTP API serves."""
        pairs = [(h.series, h.study.study_instance_uid) for h in hits if h.series is not None]
        summaries = {d["series_instance_uid"]: d for d in self.queries.series_dicts(session, pairs)}
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

    @staticmethod
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

    # -- response identifier -------------------------------------------------------------
    @staticmethod
    def _identifier(request: FindRequest, hit: Hit) -> Dataset:
        """A pending response's identifier (PS3.4 C.4.1.1.3.2): the requested keys only."""
        ds = Dataset()
        ds.add_new(QUERY_RETRIEVE_LEVEL, "CS", request.level)
        ascii_only = True
        for key in request.returns:
            value = _element_value(key.vr, key.value(hit))
            ascii_only = ascii_only and _is_ascii(value)
            ds.add_new(key.tag, key.vr, value)
        if not ascii_only:
            ds.add_new(SPECIFIC_CHARACTER_SET, "CS", UTF8)
        elif request.charset_requested:
            ds.add_new(SPECIFIC_CHARACTER_SET, "CS", request.charset)
        return ds
