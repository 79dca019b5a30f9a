"""Parse a C-FIND request identifier into a :class:`FindRequest` (PS3.4 C.4.1.1.3.1).

Study Root (PS3.4 C.6.2.1) and Patient Root (PS3.4 C.6.1.1) models.  Relational
queries (PS3.4 C.4.1.2.2) are accepted unless ``[query] relational = false`` and the
requester did not negotiate them (SOP Class Extended Negotiation, PS3.4 C.4.1.1.1): any
level, any keys, without the unique keys of the levels above.  Baseline hierarchical
search (PS3.4 C.4.1.3.1) asks, below the top level, for the unique key of every level
above -- Patient ID (0010,0020) in Patient Root, Study Instance UID (0020,000D), Series
Instance UID (0020,000E) -- never empty or wild (a list of UIDs is accepted there too, a
relaxation of the single value the baseline asks for).

The values of each key are checked against the matching its kind allows (PS3.4 C.2.2.2)
and kept as :class:`Term` s, which :mod:`scp.services.find.sql` turns into SQL:

* Single Value Matching (C.2.2.2.1): leading and trailing spaces are padding; integer keys
  (IS, US) must hold an integer.
* List of UID Matching (C.2.2.2.2): ``uid1\\uid2``, one term per UID.
* Universal Matching (C.2.2.2.3): a zero-length value (or only ``*``, C.2.2.2.4 note 1)
  gives no criterion; the key is still returned.
* Wild Card Matching (C.2.2.2.4): ``*`` and ``?`` in string keys (AE, CS, LO, SH...);
  refused (0xA900) in UIDs, dates, times or numbers.
* Range Matching (C.2.2.2.5): DA and TM as ``a-b``, ``-b`` or ``a-``; the ACR-NEMA forms
  ``YYYY.MM.DD`` and ``HH:MM:SS`` are read too (PS3.5 6.2).
* Several values in a key that is not a UID (``CT\\MR``): one term each, read as *any of*
  (PS3.4 C.2.2.2.8 note 4).
* Person Name (PN): single value or wild card per component group, see
  :mod:`scp.services.find.sql` (the ``pn`` kind).
* Keys the node does not support, and return-only keys given a value, are listed in
  :attr:`FindRequest.unsupported` (pending status 0xFF01, PS3.4 C.4.1.1.4).

pydicom only: no SQL, no network.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from pydicom.datadict import keyword_for_tag
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.tag import BaseTag

from scp import status
from scp.pipeline.vr import is_da, is_tm, parse_is
from scp.services.find.errors import FindError, quoted
from scp.services.find.keys import (
    MODEL_LEVELS,
    QUERY_RETRIEVE_LEVEL,
    SPECIFIC_CHARACTER_SET,
    UNIQUE_KEYS,
    KeyDef,
    Level,
    Model,
    resolve_key,
    tag_of,
)

_DA_LEGACY = re.compile(r"[0-9]{4}\.[0-9]{2}\.[0-9]{2}")  # ACR-NEMA, PS3.5 6.2 DA note


@dataclass(frozen=True)
class Term:
    """One value of a matching key (PS3.4 C.2.2.2).

    ``op`` is ``eq`` (``a``: the value), ``wild`` (``a``: the pattern with ``*``/``?``),
    ``range`` (``a``/``b``: lower/upper bound, ``None`` when open) or ``int`` (``a``: the
    integer, ``b``: the text as sent).
    """

    op: str
    a: Any = None
    b: Any = None


@dataclass
class Criterion:
    """A matching key and its values: an entity matches when one term does."""

    key: KeyDef
    terms: list[Term]


@dataclass
class FindRequest:
    """A parsed, validated identifier (PS3.4 C.4.1.1.3.1)."""

    level: Level
    #: The information model the request came in (``STUDY``: Study Root, ``PATIENT``).
    model: Model = "STUDY"
    returns: list[KeyDef] = field(default_factory=list)
    criteria: list[Criterion] = field(default_factory=list)
    #: Keys neither matched nor returned, or given a value that is not matched (0xFF01).
    unsupported: list[str] = field(default_factory=list)
    #: Specific Character Set (0008,0005) was in the identifier, with this value.
    charset_requested: bool = False
    charset: Any = None

    @property
    def wanted(self) -> set[str]:
        """Keywords of the computed keys to return (filled per batch of matches)."""
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
    if _DA_LEGACY.fullmatch(text):
        text = text.replace(".", "")
    if not is_da(text):
        raise FindError(
            status.FIND_ERROR_IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS,
            quoted(f"{key.keyword}: not a date YYYYMMDD: ", text),
            int(key.tag),
        )
    return text


def _time(text: str, key: KeyDef) -> str:
    text = text.replace(":", "")  # ACR-NEMA HH:MM:SS (PS3.5 6.2 TM note)
    if not is_tm(text):
        raise FindError(
            status.FIND_ERROR_IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS,
            quoted(f"{key.keyword}: not a time HHMMSS.FFFFFF: ", text),
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
        if key.kind in ("string", "pn"):
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
                raise FindError(bad, quoted(f"{key.keyword}: not a range: ", value), int(key.tag))
            terms.append(
                Term("range", parse(low, key) if low else None, parse(high, key) if high else None)
            )
        elif key.kind == "number":
            number = parse_is(value)
            if number is None:
                raise FindError(
                    bad, quoted(f"{key.keyword}: not an integer: ", value), int(key.tag)
                )
            terms.append(Term("int", number, value))
    return terms


def query_level(ds: Dataset, model: Model) -> Level:
    """The Query/Retrieve Level (0008,0052) of an identifier, one of ``model``'s levels.

    Raises :class:`FindError` 0xA900 when it is missing or not a level of the model.
    """
    levels = MODEL_LEVELS[model]
    try:
        raw_level = ds.get(QUERY_RETRIEVE_LEVEL)
        level_text = str(raw_level.value if raw_level is not None else "").strip().upper()
    except Exception:
        level_text = ""
    if level_text not in levels:
        raise FindError(
            status.FIND_ERROR_IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS,
            f"Query/Retrieve Level must be {', '.join(levels[:-1])} or {levels[-1]}",
            int(QUERY_RETRIEVE_LEVEL),
        )
    return cast(Level, level_text)


def parse_identifier(ds: Dataset, model: Model = "STUDY", relational: bool = True) -> FindRequest:
    """Check an identifier against an information model (PS3.4 C.4.1.1.3.1, C.6.1, C.6.2).

    ``model`` is ``STUDY`` (Study Root) or ``PATIENT`` (Patient Root); ``relational``
    accepts relational queries (PS3.4 C.4.1.2.2), else the unique keys of the levels
    above are required (PS3.4 C.4.1.3.1.1).  Raises :class:`FindError` (0xA900
    Identifier Does Not Match SOP Class) for a missing or unknown Query/Retrieve Level, a
    missing unique key, or a value its key cannot match; every Error Comment fits LO.
    """
    bad = status.FIND_ERROR_IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS
    level = query_level(ds, model)
    levels = MODEL_LEVELS[model]
    request = FindRequest(level=level, model=model)
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
    if relational:
        return request
    for upper in levels[: levels.index(level)]:
        keyword = UNIQUE_KEYS[upper]
        criterion = next((c for c in request.criteria if c.key.keyword == keyword), None)
        if criterion is None or any(t.op != "eq" for t in criterion.terms):
            raise FindError(
                bad,
                f"{level} query needs {keyword} (PS3.4 C.4.1.3.1)",
                int(tag_of(keyword)),
            )
    return request
