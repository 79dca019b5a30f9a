"""Whole-string checks of the text value representations the node reads (PS3.5 6.2).

Every check matches the *whole* string (``re.fullmatch``): ``re.match(...$)`` would
accept a trailing newline (``'1\\n'``), and ``\\d`` would accept non-ASCII digits
(``'\\u0661'``).  Padding the standard allows (leading/trailing spaces for IS, trailing spaces
for AE) is accepted where PS3.5 6.2 allows it; nothing else is.  All functions are pure.

The UI check lives with the UID-to-path mapping (:func:`storage.uids.check_uid`) and the
DS checks with the DS rules (:mod:`scp.pipeline.ds`); both match the whole string too.
"""

from __future__ import annotations

import re

__all__ = [
    "AE_MAX_CHARS",
    "IS_MAX_BYTES",
    "ae_title_problem",
    "is_da",
    "is_finding_code",
    "is_tm",
    "parse_is",
]

#: PS3.5 Table 6.2-1 IS: optional leading/trailing spaces, a sign, ASCII digits.
_IS = re.compile(r" *[+-]?[0-9]+ *")
#: PS3.5 Table 6.2-1: an IS value is at most 12 bytes and in -2**31 .. 2**31-1.
IS_MAX_BYTES = 12
_IS_RANGE = range(-(2**31), 2**31)

#: DA YYYYMMDD (PS3.5 6.2); month 01-12 and day 01-31 are checked by :func:`is_da`.
_DA = re.compile(r"[0-9]{8}")
#: TM HH[MM[SS[.F{1,6}]]] (PS3.5 6.2); the field ranges are checked by :func:`is_tm`.
_TM = re.compile(r"[0-9]{2}(?:[0-9]{2}(?:[0-9]{2}(?:\.[0-9]{1,6})?)?)?")

#: PS3.5 Table 6.2-1 AE: at most 16 characters of the Default Character Repertoire, no
#: backslash, no control character; leading and trailing spaces are not significant.
AE_MAX_CHARS = 16
_AE = re.compile(r"[\x20-\x5b\x5d-\x7e]{1,16}")

#: A finding code of the node (``PIXEL_SPACING_SWAPPED``): upper-case ASCII letters,
#: digits and underscores, starting with a letter.
_FINDING_CODE = re.compile(r"[A-Z][A-Z0-9_]*")


def parse_is(text: str) -> int | None:
    """An Integer String value (PS3.5 6.2 IS) as an ``int``; ``None`` when ``text`` is not
    one: more than 12 bytes, outside -2**31 .. 2**31-1, inner spaces, other padding
    (newline, NUL, tab), ``_`` separators or non-ASCII digits."""
    if len(text) > IS_MAX_BYTES or not _IS.fullmatch(text):
        return None
    value = int(text)
    return value if value in _IS_RANGE else None


def is_da(text: str) -> bool:
    """``text`` is a date ``YYYYMMDD`` (PS3.5 6.2 DA) with month 01-12 and day 01-31."""
    return bool(_DA.fullmatch(text)) and "01" <= text[4:6] <= "12" and "01" <= text[6:8] <= "31"


def is_tm(text: str) -> bool:
    """``text`` is a time ``HH[MM[SS[.FFFFFF]]]`` (PS3.5 6.2 TM), HH 00-23, MM 00-59,
    SS 00-60 (a leap second)."""
    return (
        bool(_TM.fullmatch(text)) and text[:2] <= "23" and text[2:4] <= "59" and (text[4:6] <= "60")
    )


def ae_title_problem(title: str) -> str | None:
    """Why ``title`` is not an AE title (PS3.5 6.2 AE), or ``None`` when it is one: 1 to 16
    characters of printable ASCII without backslash, not only spaces.  Leading/trailing
    spaces are allowed (not significant); a newline, tab, NUL or non-ASCII letter is not."""
    if not title.strip(" "):
        return "empty or only spaces"
    if len(title) > AE_MAX_CHARS:
        return f"longer than {AE_MAX_CHARS} characters"
    if not _AE.fullmatch(title):
        return "only printable ASCII characters without backslash (PS3.5 6.2 AE)"
    return None


def is_finding_code(text: str) -> bool:
    """``text`` is the shape of a finding code (``PIXEL_SPACING_SWAPPED``)."""
    return bool(_FINDING_CODE.fullmatch(text))
