"""Build the SQL statement of a C-FIND request (PS3.4 C.2.2.2, C.4.1.3.1).

Matching is translated into SQL, so the database does the filtering:

* Single Value Matching (C.2.2.2.1): exact and case-sensitive.  Integer keys (IS, US)
  compare as numbers: ``=`` on an integer column, else the text as sent or as an integer.
* List of UID Matching (C.2.2.2.2): ``uid1\\uid2`` becomes ``IN`` (one ``=`` per UID).
* Universal Matching (C.2.2.2.3): no criterion, no condition.
* Wild Card Matching (C.2.2.2.4): ``*`` and ``?``, case-sensitive: ``GLOB`` on SQLite
  (its ``LIKE`` ignores case), ``LIKE`` with ``%``/``_``/``\\`` escaped elsewhere.
* Range Matching (C.2.2.2.5): DA and TM bounds compare as text; a partial upper time
  bound (``-10``, ``-1030``) takes in the whole hour or minute.
* Several values in a key that is not a UID (``CT\\MR``): without Extended Negotiation of
  Multiple Value Matching their meaning is undefined (PS3.4 C.2.2.2.8 note 4); the node
  reads them as *any of* -- ``ModalitiesInStudy=CT\\MR`` finds studies with a CT or an
  MR series (the negotiated meaning, *all of*, is not offered).
* Person Name (PN, PS3.4 C.2.2.2.1 and C.2.2.2.4, PS3.5 6.2.1): ASCII case-insensitive
  (the conformance statement says so, as Orthanc and dcm4chee do by default), wild
  cards allowed.  A value without ``=`` matches any component group of the stored name
  (alphabetic, ideographic or phonetic); a value with ``=`` matches group by group, an
  empty group matching anything.
* PATIENT level (Patient Root): a patient is the studies of one Patient ID; the study
  with the lowest id stands for it.
* Unknown values (PS3.4 C.2.2.1.2): an entity whose Required or supported Optional Key
  is empty matches any value of that key (``[query] match_unknown``); UIDs never do.

SQLAlchemy over :mod:`storage.models`; no pydicom datasets.
"""

from __future__ import annotations

import string
from typing import Any

from sqlalchemy import ColumnElement, Integer, Select, and_, exists, func, or_, select
from sqlalchemy.orm import aliased, defer

from scp.services.find.identifier import Criterion, FindRequest, Term
from scp.services.find.keys import SERIES_GEOMETRY_KEYS, KeyDef, Level
from storage.models import Instance, Series, Study

#: The index entity of each level (PS3.4 C.6.2.1).
MODELS: dict[Level, type[Study] | type[Series] | type[Instance]] = {
    "PATIENT": Study,
    "STUDY": Study,
    "SERIES": Series,
    "IMAGE": Instance,
}


def index_column(key: KeyDef) -> Any:
    """The index column holding ``key`` (an ORM attribute of its level's entity).

    Raises ``ValueError`` for a computed key, which no column holds.
    """
    if key.attribute is None:
        raise ValueError(f"{key.keyword} is computed: no index column holds it")
    return getattr(MODELS[key.level], key.attribute)


def _wildcard(column: Any, pattern: str, dialect: str) -> ColumnElement[bool]:
    """Case-sensitive ``*``/``?`` matching (C.2.2.2.4) with the pattern's own characters
    taken literally."""
    if dialect == "sqlite":
        # SQLite's LIKE ignores ASCII case; GLOB does not. "[" is GLOB's only other
        # special character: "[[]" is a literal "[".
        return column.op("GLOB")(pattern.replace("[", "[[]"))
    like = pattern.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return column.like(like.replace("*", "%").replace("?", "_"), escape="\\")


_ASCII_UPPER = str.maketrans(string.ascii_lowercase, string.ascii_uppercase)


def _pn_condition(column: Any, term: Term, dialect: str) -> ColumnElement[bool]:
    """A Person Name value (PS3.5 6.2.1) against the stored name, ASCII case-insensitive:
    without ``=`` any component group may match, with ``=`` each group in its place."""
    value = str(term.a).translate(_ASCII_UPPER)
    # ASCII only on every backend: SQLite's upper() is; translate() is PostgreSQL's.
    if dialect == "sqlite":
        stored = func.upper(column)
    else:
        stored = func.translate(column, string.ascii_lowercase, string.ascii_uppercase)
    if "=" in value:
        groups = [g if g else "*" for g in value.split("=")]
        whole = "=".join(groups)
        patterns = [whole, whole + "=*"]
    else:
        patterns = [value, value + "=*", "*=" + value, "*=" + value + "=*"]
    return or_(*(_wildcard(stored, p, dialect) for p in patterns))


def _term_condition(key: KeyDef, column: Any, term: Term, dialect: str) -> ColumnElement[bool]:
    """The condition of one value (:class:`Term`) of ``key`` on ``column``."""
    if key.kind == "pn":
        return _pn_condition(column, term, dialect)
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
    """``column`` holds no value: NULL, or an empty string (PS3.4 C.2.2.1.2)."""
    if isinstance(column.type, Integer):
        return column.is_(None)
    return or_(column.is_(None), column == "")


def _criterion_sql(criterion: Criterion, dialect: str, match_unknown: bool) -> ColumnElement[bool]:
    """The condition of one matching key: any of its terms, or an unknown value."""
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
    indexed = index_column(key)
    cond = or_(*(_term_condition(key, indexed, t, dialect) for t in criterion.terms))
    if match_unknown and key.kind != "uid":
        cond = or_(cond, _unknown(indexed))
    return cond


def statement(request: FindRequest, dialect: str, match_unknown: bool) -> tuple[Select[Any], Any]:
    """The query of the request's level and the column its batches are keyed on.

    Rows are ``(Study,)`` (PATIENT, STUDY), ``(Series, Study)`` or ``(Instance, Series,
    Study)`` by level (see :meth:`scp.services.find.hits.Hit.from_row`); the caller adds the keyset
    condition, order and limit.  ``dialect`` is the SQLAlchemy dialect name (``sqlite``,
    ``postgresql``); ``match_unknown`` lets empty values match (PS3.4 C.2.2.1.2).
    """
    level = request.level
    stmt: Any
    if level == "PATIENT":
        # One row per Patient ID: the matching study with the lowest id stands for it.
        first = select(func.min(Study.id)).group_by(Study.patient_id)
        for criterion in request.criteria:
            first = first.where(_criterion_sql(criterion, dialect, match_unknown))
        return select(Study).where(Study.id.in_(first)), Study.id
    if level == "STUDY":
        stmt, id_column = select(Study), Study.id
    elif level == "SERIES":
        stmt = select(Series, Study).join(Study, Series.study_id == Study.id)
        id_column = Series.id
        if not request.wanted & SERIES_GEOMETRY_KEYS:
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
