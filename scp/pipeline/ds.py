"""Decimal String (DS) handling: rulebook section A, rules 1-4.

DS is defined in PS3.5 section 6.2 (Table 6.2-1): a string of characters
representing a fixed point or floating point number, at most 16 bytes per
value, leading and trailing spaces allowed and insignificant, values separated
by a backslash (PS3.5 6.4).

The node never trusts pydicom's conversion of a DS: pydicom in its default
mode hands invalid values back as plain strings, so every value is checked
here against the rule 1 pattern.  All functions are pure and cheap;
:func:`normalize_ds` is cached because the same text recurs in every frame of
an enhanced multi-frame instance.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache

__all__ = [
    "DS_MAX_BYTES",
    "DS_PATTERN",
    "DSKind",
    "DSNumber",
    "DSValue",
    "NormalizedDS",
    "classify_ds",
    "decimals_in",
    "ds_number",
    "format_ds",
    "normalize_ds",
    "parse_ds",
    "split_ds",
]

#: Rule 1: optional spaces, sign, digits with optional fraction, optional
#: exponent.  ``[0-9]`` rather than ``\d``: ``\d`` would accept non-ASCII digits.
#: Use with ``fullmatch`` (``match`` with ``$`` would accept a trailing newline).
DS_PATTERN = re.compile(r" *[+-]?([0-9]+|[0-9]+\.[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)? *")

#: Rule 2 / PS3.5 Table 6.2-1: a DS value is at most 16 bytes.
DS_MAX_BYTES = 16

#: A comma decimal: the rule 1 pattern with a single ``,`` in place of the ``.``.
_COMMA_PATTERN = re.compile(r" *[+-]?([0-9]+,[0-9]*|,[0-9]+)([eE][+-]?[0-9]+)? *")


class DSKind(StrEnum):
    """Classification of one DS value (one of the backslash-separated parts)."""

    CLEAN = "clean"
    """Matches rule 1, finite, at most 16 bytes once padding is stripped (rule 4)."""
    REFORMAT = "reformattable"
    """The number is clear but the value breaks the VR: longer than 16 bytes (rule 2)."""
    COMMA = "comma-decimal"
    """``0,5``: usable only when a swap rule names the device (rule 1)."""
    EMPTY = "empty"
    """Nothing but padding."""
    INVALID = "invalid"
    """Not a Decimal String (``0.5mm``, ``nan``, ``0. 5``) or not finite (``1e999``)."""


def parse_ds(raw: str) -> float | None:
    """Parse one DS value strictly per rule 1; ``None`` if it does not match.

    Leading/trailing spaces are accepted (rule 4).  ``nan``, ``inf``, commas,
    units, inner spaces and non-ASCII digits are rejected, as are values that
    match the pattern but overflow to infinity (``1e999``, rule 5).  The
    16-byte limit (rule 2) is not checked here: see :func:`classify_ds`.
    """
    if not DS_PATTERN.fullmatch(raw):
        return None
    value = float(raw)
    return value if math.isfinite(value) else None


def split_ds(raw: str | bytes) -> list[str]:
    """Split a multi-valued DS on the backslash delimiter (PS3.5 6.4).

    Bytes are decoded as latin-1 (DS is ASCII; latin-1 never fails).  The parts
    are returned as received, padding included; an empty input gives ``[""]``.
    """
    text = raw.decode("latin-1") if isinstance(raw, bytes) else raw
    return text.split("\\")


def classify_ds(value: str) -> DSKind:
    """Classify one DS value (a single part, no backslash).

    Stray inner spaces (``0. 5``) are treated as invalid: whether that was
    ``0.5`` or two numbers is not clear, and the node never guesses.  Exponent
    forms (``1.367188e+00``) are legal DS and therefore clean.
    """
    stripped = value.strip(" ")
    if not stripped:
        return DSKind.EMPTY
    if DS_PATTERN.fullmatch(stripped):
        if not math.isfinite(float(stripped)):
            return DSKind.INVALID
        return DSKind.CLEAN if len(stripped) <= DS_MAX_BYTES else DSKind.REFORMAT
    if _COMMA_PATTERN.fullmatch(stripped) and math.isfinite(float(stripped.replace(",", "."))):
        return DSKind.COMMA
    return DSKind.INVALID


def format_ds(x: float) -> str:
    """Format a finite number as a valid DS value of at most 16 bytes.

    Contract (tested by property tests):

    * the result matches the rule 1 pattern and is at most 16 bytes;
    * it is never ``-0`` (zero is written ``0``) and never overflows to
      infinity when parsed back;
    * when Python's shortest round-trip ``repr`` fits in 16 bytes it is used, so
      ``float(format_ds(x)) == x`` exactly;
    * otherwise the closest of the fixed and compact-exponent notations that fit
      is used: at least 11 significant digits for 1e-9 <= |x| < 1e10 (relative
      error < 1e-10), and at least 9 for any finite float (relative error
      < 5e-9); subnormals are accurate to within one subnormal step.

    Raises :class:`ValueError` for NaN and infinities (rule 5: never written).
    """
    value = float(x)
    if not math.isfinite(value):
        raise ValueError(f"cannot encode non-finite value {x!r} as a Decimal String")
    if value == 0.0:
        return "0"
    text = repr(value)
    if len(text) <= DS_MAX_BYTES:
        return text
    candidates = [c for c in (_best_fixed(value), _best_scientific(value)) if c is not None]
    return min(candidates, key=lambda c: (abs(float(c) - value), len(c)))


def _best_fixed(value: float) -> str | None:
    """Most precise fixed-point form that fits, or ``None``."""
    for digits in range(DS_MAX_BYTES - 1, -1, -1):
        text = f"{value:.{digits}f}"
        if len(text) > DS_MAX_BYTES:
            continue
        if "." in text:
            text = text.rstrip("0").rstrip(".")
        parsed = float(text)
        return text if parsed != 0.0 and math.isfinite(parsed) else None
    return None


def _best_scientific(value: float) -> str:
    """Most precise exponent form that fits and stays finite."""
    for digits in range(DS_MAX_BYTES - 1, -1, -1):
        text = _compact_exponent(f"{value:.{digits}e}")
        if len(text) <= DS_MAX_BYTES and math.isfinite(float(text)):
            return text
    raise AssertionError("unreachable: one significant digit always fits")  # pragma: no cover


def _compact_exponent(text: str) -> str:
    """``1.2500e+05`` -> ``1.25e5``: drop zeros that cost bytes, keep the value."""
    mantissa, exponent = text.split("e")
    if "." in mantissa:
        mantissa = mantissa.rstrip("0").rstrip(".")
    sign = "-" if exponent.startswith("-") else ""
    return f"{mantissa}e{sign}{int(exponent.lstrip('+-'))}"


class DSNumber(float):
    """A number read from a Decimal String, remembering the precision it was written with.

    A ``float`` everywhere (arithmetic gives plain floats); :attr:`decimals` is the number
    of decimal places the writer used (``0.976562`` -> 6, ``9.765625e-01`` -> 7, ``2`` ->
    0), which :func:`scp.pipeline.compare.agree` uses to compare two values to the
    precision of the less precise one (rulebook rule 31). ``text`` is the value as written.
    """

    decimals: int
    text: str

    def __new__(cls, text: str) -> DSNumber:
        stripped = text.strip(" ")
        number = super().__new__(cls, stripped)
        number.text = stripped
        number.decimals = _decimals(stripped)
        return number

    def __reduce__(self) -> tuple[type[DSNumber], tuple[str]]:
        return (DSNumber, (self.text,))


def ds_number(value: float, decimals: int | None) -> float:
    """``value`` with the precision it was written with (a :class:`DSNumber`), or a plain
    float when ``decimals`` is ``None`` (precision unknown)."""
    if decimals is None or not math.isfinite(value):
        return float(value)
    if decimals >= 0:
        return DSNumber(f"{value:.{decimals}f}")
    return DSNumber(f"{value / 10.0**-decimals:.0f}e{-decimals}")


def decimals_in(value: object) -> int | None:
    """Decimal places of a number read from a DS: a :class:`DSNumber`, or pydicom's
    ``DSfloat``/``str`` with its original text; ``None`` when not known."""
    if isinstance(value, DSNumber):
        return value.decimals
    text = getattr(value, "original_string", None)
    if text is None and isinstance(value, str):
        text = value
    if isinstance(text, str) and DS_PATTERN.fullmatch(text):
        return _decimals(text.strip(" "))
    return None


def _decimals(text: str) -> int:
    """Decimal places written in a rule 1 number: fraction digits minus the exponent."""
    mantissa, _, exponent = text.lower().partition("e")
    fraction = mantissa.partition(".")[2]
    return len(fraction) - (int(exponent) if exponent else 0)


@dataclass(frozen=True)
class DSValue:
    """One value of a multi-valued DS, as received and as understood."""

    text: str  # padding stripped (rule 4)
    kind: DSKind
    number: float | None  # for CLEAN, REFORMAT and COMMA; None otherwise


@dataclass(frozen=True)
class NormalizedDS:
    """A whole DS element value: its parts and the normalized form (rules 1-4).

    ``values`` is the normalized text of each value once trailing empty values
    are dropped (rule 3), over-long values reformatted (rule 2) and, when
    allowed, comma decimals fixed (rule 1); it is ``None`` when any remaining
    value is not a usable number (never guess).
    """

    raw: str
    parts: tuple[DSValue, ...]
    trailing_empty: int
    values: tuple[str, ...] | None
    numbers: tuple[float, ...] | None

    @property
    def vm(self) -> int:
        """Value multiplicity after dropping trailing empty values."""
        return len(self.parts) - self.trailing_empty

    @property
    def kept(self) -> tuple[DSValue, ...]:
        """The values that count (trailing empty values dropped)."""
        return self.parts[: self.vm]

    @property
    def is_empty(self) -> bool:
        """Zero-length or padding-only value (a Type 2 element left empty)."""
        return self.vm == 0

    @property
    def unusable(self) -> tuple[DSValue, ...]:
        """Kept values that are not numbers (invalid, empty, unfixed comma)."""
        return tuple(p for p in self.kept if p.number is None)

    @property
    def reformatted(self) -> tuple[DSValue, ...]:
        return tuple(p for p in self.kept if p.kind is DSKind.REFORMAT)

    @property
    def comma_fixed(self) -> tuple[DSValue, ...]:
        return tuple(p for p in self.kept if p.kind is DSKind.COMMA and p.number is not None)

    @property
    def text(self) -> str | None:
        """The normalized element text, values joined by backslash."""
        return None if self.values is None else "\\".join(self.values)

    @property
    def needs_edit(self) -> bool:
        """True when normalization changes more than padding (rule 4)."""
        return self.values is not None and bool(
            self.trailing_empty or self.reformatted or self.comma_fixed
        )


#: Texts longer than this are not cached (a hostile header may send 64 KiB).
_CACHE_LIMIT = 256


def normalize_ds(raw: str, comma_decimal: bool = False) -> NormalizedDS:
    """Split, classify and normalize a DS element text (rules 1-4).

    ``comma_decimal`` is true only when a configured swap rule names the sending
    device as writing ``0,5`` for ``0.5`` (rule 1).  Cached for short texts:
    the same value recurs in every frame of an enhanced multi-frame instance.
    """
    if len(raw) <= _CACHE_LIMIT:
        return _normalize_cached(raw, comma_decimal)
    return _normalize(raw, comma_decimal)


@lru_cache(maxsize=4096)
def _normalize_cached(raw: str, comma_decimal: bool) -> NormalizedDS:
    return _normalize(raw, comma_decimal)


def _normalize(raw: str, comma_decimal: bool) -> NormalizedDS:
    parts = tuple(_value(p, comma_decimal) for p in split_ds(raw)) if raw.strip(" ") else ()
    trailing = 0
    while trailing < len(parts) and parts[len(parts) - 1 - trailing].kind is DSKind.EMPTY:
        trailing += 1
    kept = parts[: len(parts) - trailing]
    if any(p.number is None for p in kept):
        return NormalizedDS(raw, parts, trailing, None, None)
    values = tuple(_normalized_text(p) for p in kept)
    numbers = tuple(p.number for p in kept if p.number is not None)
    return NormalizedDS(raw, parts, trailing, values, numbers)


def _value(part: str, comma_decimal: bool) -> DSValue:
    kind = classify_ds(part)
    text = part.strip(" ")
    number: float | None = None
    if kind in (DSKind.CLEAN, DSKind.REFORMAT):
        number = DSNumber(text)
    elif kind is DSKind.COMMA and comma_decimal:
        number = DSNumber(text.replace(",", "."))
    return DSValue(text, kind, number)


def _normalized_text(part: DSValue) -> str:
    if part.kind is DSKind.CLEAN:
        return part.text
    if part.kind is DSKind.COMMA:
        fixed = part.text.replace(",", ".")
        if len(fixed) <= DS_MAX_BYTES:
            return fixed
    assert part.number is not None
    return format_ds(part.number)
