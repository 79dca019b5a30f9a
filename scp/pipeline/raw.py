"""Header values as received: raw text, binary numbers, sequence items, DSAttr.

Text is read raw: :func:`raw_text` takes the element's bytes as received
(``Dataset.get_item`` returns the unconverted ``RawDataElement`` for a header
read with ``dcmread(..., force=True)`` or decoded by pynetdicom), so a value
pydicom would refuse, coerce or reformat is seen exactly as the sender wrote
it (rulebook rules 1 and 4; DS is PS3.5 6.2).  Binary values (US, UL, FD) are
unpacked from the raw bytes with the element's own byte order (PS3.5 7.3).
Nothing here raises on a malformed header: an element that cannot be read is
reported as absent, and the dataset is never modified or copied; the pixel
data is never touched.

:class:`DSAttr` is one occurrence of a DS element (its path and raw text),
read by :func:`ds_attr`.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence as DicomSequence

from .ds import NormalizedDS, normalize_ds
from .labels import attribute_label, keyword_tag, tag_text
from .model import ElementPath

__all__ = [
    "DSAttr",
    "ds_attr",
    "first_int",
    "first_number",
    "int_text",
    "raw_text",
    "sequence_items",
    "written_vr",
]


def _decode(data: bytes) -> str:
    try:
        return data.decode("ascii")
    except UnicodeDecodeError:
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            return data.decode("latin-1")


def _item_text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes | bytearray):
        return _decode(bytes(value))
    original = getattr(value, "original_string", None)
    if isinstance(original, str):
        return original
    return str(value)


def _value_text(value: object) -> str | None:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bytes | bytearray | memoryview):
        return _decode(bytes(value))
    if isinstance(value, Dataset | DicomSequence):
        return None
    if isinstance(value, list | tuple | MultiValue):
        items = list(value)
        if any(isinstance(v, Dataset) for v in items):
            return None  # a sequence, not text
        return "\\".join(_item_text(v) for v in items)
    return _item_text(value)


def _element(ds: Dataset, tag: int) -> object | None:
    try:
        return ds.get_item(tag)
    except Exception:  # a broken deferred read or a Dataset subclass that misbehaves
        return None


def raw_text(ds: Dataset, key: str | int) -> str | None:
    """The element's text exactly as received, or ``None`` when absent.

    ``key`` is a keyword or an int tag.  The raw bytes are used when the element
    has not been converted yet; a converted value is turned back into text from
    pydicom's ``original_string`` where it kept one.  Bytes are decoded as
    ASCII, then UTF-8, then latin-1 (DS, CS, UI and IS are ASCII).  Only the
    padding at the end of the whole value (spaces, and NULs some devices use)
    is stripped: leading and per-value spaces stay, they are legal (rule 4).
    An element present with zero length gives ``""``.  Elements read with
    another VR (UN, OB, LO, ...) are read the same way.
    """
    try:
        tag = keyword_tag(key) if isinstance(key, str) else int(key)
    except KeyError:
        return None
    elem = _element(ds, tag)
    if elem is None:
        return None
    text = _value_text(getattr(elem, "value", None))
    return None if text is None else text.rstrip(" \x00")


_BINARY = {"US": "H", "SS": "h", "UL": "I", "SL": "i", "FD": "d", "FL": "f"}


def _binary_values(ds: Dataset, tag: int, vr: str) -> tuple[float, ...] | None:
    """Numbers of a binary element (US, UL, FD, ...), or ``None`` if unreadable."""
    elem = _element(ds, tag)
    if elem is None:
        return None
    value = getattr(elem, "value", None)
    if isinstance(value, bytes | bytearray):
        little = bool(getattr(elem, "is_little_endian", True))
        code = _BINARY[vr]
        size = struct.calcsize(code)
        if not value or len(value) % size:
            return None
        fmt = f"{'<' if little else '>'}{len(value) // size}{code}"
        return tuple(float(v) for v in struct.unpack(fmt, value))
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return (float(value),)
    if isinstance(value, list | tuple | MultiValue):
        items = list(value)
        if items and all(isinstance(v, int | float) and not isinstance(v, bool) for v in items):
            return tuple(float(v) for v in items)
    return None


def first_number(ds: Dataset, keyword: str, vr: str) -> float | None:
    """First value of a binary element of VR ``vr`` when finite, else ``None``."""
    values = _binary_values(ds, keyword_tag(keyword), vr)
    if not values or not math.isfinite(values[0]):
        return None
    return values[0]


def first_int(ds: Dataset, keyword: str, vr: str = "US") -> int | None:
    """First value of a binary integer element (US by default), or ``None``."""
    number = first_number(ds, keyword, vr)
    return None if number is None else int(number)


def sequence_items(ds: Dataset, keyword: str) -> list[Dataset] | None:
    """Items of a sequence element; ``None`` when absent or not a sequence."""
    tag = keyword_tag(keyword)
    try:
        if tag not in ds:
            return None
        value = ds[tag].value
    except Exception:
        return None
    if isinstance(value, DicomSequence | list):
        return [item for item in value if isinstance(item, Dataset)]
    return None


def int_text(ds: Dataset, keyword: str) -> int | None:
    """An IS value (e.g. Number of Frames) parsed leniently, for reporting."""
    text = raw_text(ds, keyword)
    if not text:
        return None
    try:
        return int(text.split("\\")[0].strip())
    except ValueError:
        return None


@dataclass(frozen=True)
class DSAttr:
    """One occurrence of a DS element: where it is and its raw text."""

    keyword: str
    path: ElementPath
    raw: str  # as received, end padding stripped ("" when present but empty)
    #: The VR the element was written with (explicit VR), ``None`` when not written
    #: (implicit VR) or after an edit; rule 33 compares it with PS3.6's.
    vr: str | None = None

    @property
    def tag(self) -> str:
        return tag_text(self.keyword)

    @property
    def label(self) -> str:
        """``Pixel Spacing (0028,0030)``."""
        return attribute_label(self.keyword)

    @property
    def parsed(self) -> NormalizedDS:
        """Values as received, without comma-decimal correction (rule 1)."""
        return normalize_ds(self.raw)

    def normalized(self, comma_decimal: bool = False) -> NormalizedDS:
        return normalize_ds(self.raw, comma_decimal)

    @property
    def numbers(self) -> tuple[float, ...] | None:
        return self.parsed.numbers

    @property
    def pair(self) -> tuple[float, float] | None:
        """(first, second) when the value holds exactly two usable numbers."""
        numbers = self.parsed.numbers
        if numbers is None or len(numbers) != 2:
            return None
        return numbers[0], numbers[1]

    @property
    def single(self) -> float | None:
        numbers = self.parsed.numbers
        return numbers[0] if numbers is not None and len(numbers) == 1 else None


def ds_attr(ds: Dataset, keyword: str, prefix: ElementPath = ()) -> DSAttr | None:
    """The DS element ``keyword`` of ``ds`` at ``prefix``, or ``None`` when absent."""
    text = raw_text(ds, keyword)
    if text is None:
        return None
    return DSAttr(keyword, (*prefix, keyword), text, written_vr(ds, keyword_tag(keyword)))


def written_vr(ds: Dataset, tag: int) -> str | None:
    """The VR an element was written with: an explicit VR as received, ``None`` for an
    element read in implicit VR (its VR was looked up, not written)."""
    elem = _element(ds, tag)
    vr = getattr(elem, "VR", None)
    if vr is None or getattr(elem, "is_implicit_VR", False):
        return None
    return str(vr)
