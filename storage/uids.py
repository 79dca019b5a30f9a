"""UID checks and the mapping from UIDs to store paths.

A UID becomes a path component only after it passed :func:`check_uid`: the UI
value representation (PS3.5 6.2, 9.1) allows digits and dots, components
separated by single dots, at most 64 characters.  Leading zeros inside a
component break PS3.5 9.1 but are common in the field and harmless in a path,
so they are read leniently.  Anything else (``/``, ``..``, spaces, non-ASCII,
empty components, over 64 characters) is refused and never used raw.
"""

from __future__ import annotations

import re
from pathlib import Path

#: Used with ``fullmatch``: ``match`` with ``$`` would accept a trailing newline.
_UID_RE = re.compile(r"[0-9]+(?:\.[0-9]+)*")
UID_MAX_LENGTH = 64


class InvalidUID(ValueError):
    """A UID that does not follow the UI grammar (PS3.5 9.1)."""

    def __init__(self, keyword: str, value: object, reason: str) -> None:
        if value is None or reason == "empty":
            message = f"{keyword} is missing or empty"
        else:
            message = f"{keyword} {value!r} is not a valid UID: {reason} (PS3.5 9.1)"
        super().__init__(message)
        self.keyword = keyword
        self.value = value


def normalize_uid(value: object) -> str:
    """Strip the padding a UI value may carry (trailing NUL, PS3.5 6.2) and spaces."""
    if value is None:
        return ""
    if isinstance(value, bytes):
        value = value.decode("ascii", errors="replace")
    return str(value).strip("\x00 ")


def check_uid(value: object, keyword: str = "UID") -> str:
    """Return the normalized UID, or raise :class:`InvalidUID`."""
    uid = normalize_uid(value)
    if not uid:
        raise InvalidUID(keyword, value, "empty")
    if len(uid) > UID_MAX_LENGTH:
        raise InvalidUID(keyword, value, f"longer than {UID_MAX_LENGTH} characters")
    if not _UID_RE.fullmatch(uid):
        raise InvalidUID(keyword, value, "only digits separated by single dots are allowed")
    return uid


def instance_relpath(study_uid: str, series_uid: str, sop_uid: str) -> Path:
    """``<study>/<series>/<sop>.dcm`` for three UIDs, each checked first."""
    return Path(
        check_uid(study_uid, "StudyInstanceUID"),
        check_uid(series_uid, "SeriesInstanceUID"),
        check_uid(sop_uid, "SOPInstanceUID") + ".dcm",
    )
