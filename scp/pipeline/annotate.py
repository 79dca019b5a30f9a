"""The node's verdict, written into the instance as a private block.

Private Data Elements (PS3.5 7.8.1) in the odd group ``0009`` (below
``7FE0``, so they precede the pixel data and are read with the header):
the Private Creator ``SPACING_SCP`` reserves a block ``xx`` at
``(0009,00xx)`` (the first free one, normally ``xx = 10``), and the data
elements are ``(0009,xxyy)`` with these offsets ``yy``:

======  ==  ====  ===========================================================
Offset  VR  VM    Content
======  ==  ====  ===========================================================
0x10    LO  1     Verdict: ``ok``, ``invalid``, ``corrected``, ``warning`` or
                  ``info`` (worst finding severity; lower case, hence LO)
0x11    LO  1-n   Finding codes, sorted, one value per code
0x12    DS  1     Effective row spacing in mm: distance between rows, the
                  first Pixel Spacing value (rule 6); empty if none is usable
0x13    DS  1     Effective column spacing in mm (second value); empty if none
0x14    LO  1     Source of the effective spacing, e.g. ``PixelSpacing``,
                  ``ImagerPixelSpacing/ERMF``, ``PixelMeasuresSequence``
0x15    LO  1     Calibration label (rule 14), e.g. ``at detector``
0x16    LO  1     Node software and version, e.g. ``spacing-scp 0.1.0``
0x17    DT  1     When the node processed the instance
0x18    LT  1     Human-readable summary: verdict, spacing, findings, edits
                  (at most 10240 characters)
0x19    LO  1-n   Keywords of the attributes the node changed (the previous
                  values are in Original Attributes Sequence (0400,0561))
======  ==  ====  ===========================================================

Empty elements are present with a zero length; spacing is never defaulted
(rule 5).  Values are ASCII (non-ASCII characters are transliterated or
replaced by ``?``) so they are valid under any Specific Character Set.  In an
explicit VR transfer syntax the VRs above are written; in Implicit VR Little
Endian a reader without this table sees the elements as UN.

Annotating an instance that already holds a ``SPACING_SCP`` block (a resend
of an instance the node stored before) replaces every element of that block;
a second block of the same creator is removed.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime

from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, PrivateBlock
from pydicom.tag import BaseTag, Tag
from pydicom.valuerep import format_number_as_ds

from scp import __version__
from scp.pipeline.model import PipelineResult
from scp.pipeline.record import element_text, format_dt

PRIVATE_GROUP = 0x0009
DEFAULT_CREATOR = "SPACING_SCP"

#: Element offsets inside the block (the conformance statement's table).
VERDICT = 0x10
FINDING_CODES = 0x11
ROW_SPACING = 0x12
COLUMN_SPACING = 0x13
SPACING_SOURCE = 0x14
CALIBRATION = 0x15
NODE_VERSION = 0x16
PROCESSED_AT = 0x17
SUMMARY = 0x18
EDITED_ATTRIBUTES = 0x19

LT_MAX_CHARS = 10240
LO_MAX_CHARS = 64
#: An explicit VR LO element has a 2-byte length (PS3.5 7.1.2).
_LO_MAX_ELEMENT_BYTES = 0xFFFE

_ASCII_REPLACEMENTS = str.maketrans(
    {
        "\u00d7": "x",  # multiplication sign
        "\u2264": "<=",
        "\u2265": ">=",
        "\u2260": "!=",
        "\u00b1": "+/-",
        "\u00b5": "u",
        "\u03bc": "u",
        "\u2013": "-",
        "\u2014": "-",
        "\u2018": "'",
        "\u2019": "'",
        "\u201c": '"',
        "\u201d": '"',
        "\u2192": "->",
        "\u00b0": " deg",
    }
)


def _ascii(text: str, *, multiline: bool = False) -> str:
    """Printable ASCII; LF/CR/FF kept in LT (PS3.5 6.2), other controls become spaces."""
    text = text.translate(_ASCII_REPLACEMENTS)
    allowed_controls = "\n\r\f" if multiline else ""
    return "".join(
        c if (" " <= c <= "~" or c in allowed_controls) else ("?" if ord(c) > 0x7E else " ")
        for c in text
    )


def _lo(text: str) -> str:
    """A single LO value: no backslash, at most 64 characters."""
    return _ascii(text).replace("\\", "/").strip(" ")[:LO_MAX_CHARS]


def _ds(value: float | None) -> str | None:
    """A DS value of at most 16 bytes, or ``None`` (zero length) if unusable."""
    if value is None or not math.isfinite(value):
        return None
    return format_number_as_ds(float(value))


def _creator_slots(ds: Dataset, group: int, creator: str) -> list[int]:
    """Block numbers ``xx`` whose Private Creator ``(gggg,00xx)`` is ``creator``."""
    slots = []
    for element in range(0x10, 0x100):
        tag = Tag(group, element)
        if tag in ds:
            value = element_text(ds.get_item(tag))
            if value is not None and value.strip(" \x00") == creator:
                slots.append(element)
    return slots


def _block_tags(ds: Dataset, group: int, slot: int) -> list[BaseTag]:
    # Iterating a Dataset itself would decode every element: iterate its tags.
    return [t for t in ds.keys() if t.group == group and t.element >> 8 == slot]  # noqa: SIM118


def _free_slot(ds: Dataset, group: int) -> int:
    for element in range(0x10, 0x100):
        if Tag(group, element) not in ds and not _block_tags(ds, group, element):
            return element
    raise ValueError(f"no free private block in group {group:04X}")


def reserve_block(ds: Dataset, creator: str = DEFAULT_CREATOR) -> PrivateBlock:
    """The ``creator`` block in group 0009, emptied, reserved if absent (PS3.5 7.8.1)."""
    slots = _creator_slots(ds, PRIVATE_GROUP, creator)
    for slot in slots[1:]:  # a duplicate block of ours: remove it with its creator
        for tag in _block_tags(ds, PRIVATE_GROUP, slot):
            del ds[tag]
        del ds[Tag(PRIVATE_GROUP, slot)]
    if slots:
        slot = slots[0]
        for tag in _block_tags(ds, PRIVATE_GROUP, slot):
            del ds[tag]
    else:
        slot = _free_slot(ds, PRIVATE_GROUP)
        ds.add_new(Tag(PRIVATE_GROUP, slot), "LO", creator)
    try:
        block: PrivateBlock | None = ds.private_block(PRIVATE_GROUP, creator, create=True)
    except ValueError:  # another creator's value that strict reading refuses to decode
        block = None
    if block is None or block.block_start >> 8 != slot:  # or a cache from before our clean-up
        block = PrivateBlock((PRIVATE_GROUP, creator), ds, slot)
    return block


def _codes(codes: list[str]) -> tuple[list[str], int]:
    """LO values for the codes that fit in one element, and how many were left out."""
    kept: list[str] = []
    size = 0
    for code in (_lo(c) for c in codes):
        if not code:
            continue
        if size + len(code) + 1 > _LO_MAX_ELEMENT_BYTES:
            return kept, len(codes) - len(kept)
        kept.append(code)
        size += len(code) + 1
    return kept, 0


def summary_text(result: PipelineResult, version: str) -> str:
    """The human-readable summary (offset 0x18), at most 10240 characters."""
    eff = result.effective
    lines = [f"spacing-scp {version}: {result.verdict}"]
    if eff.row_mm is not None and eff.column_mm is not None:
        spacing = f"row {eff.row_mm:g} mm, column {eff.column_mm:g} mm"
        detail = ", ".join(x for x in (eff.source, eff.calibration) if x)
        lines.append(f"spacing: {spacing}" + (f" ({detail})" if detail else ""))
    else:
        lines.append("spacing: none usable")
    if result.findings:
        lines.append("findings:")
        for f in result.findings:
            cite = ", ".join(x for x in (f"rule {f.rule}" if f.rule else "", f.tag or "") if x)
            lines.append(
                f"- {f.code} [{f.severity.value}] {f.message}" + (f" ({cite})" if cite else "")
            )
    if result.edits:
        lines.append("changed (previous values in Original Attributes Sequence (0400,0561)):")
        for e in result.edits:
            where = ".".join(str(p) for p in e.path)
            lines.append(f"- {where}: {e.old!r} -> {e.new!r} ({e.reason}, {e.code})")
    text = _ascii("\n".join(lines), multiline=True)
    if len(text) > LT_MAX_CHARS:
        text = text[: LT_MAX_CHARS - 3] + "..."
    return text


def annotate(
    ds: Dataset,
    result: PipelineResult,
    creator: str = DEFAULT_CREATOR,
    *,
    now: datetime | None = None,
    version: str = __version__,
) -> None:
    """Write the node's verdict on ``ds`` into its private block (see the module table).

    ``now`` defaults to the current time (UTC); ``version`` to the package's.
    """
    creator = _lo(creator)
    if not creator:
        raise ValueError("a private creator must have a value (PS3.5 7.8.1)")
    block = reserve_block(ds, creator)
    eff = result.effective
    codes, left_out = _codes(result.codes)
    summary = summary_text(result, version)
    if left_out:
        summary = (summary + f"\n({left_out} more finding codes not listed)")[-LT_MAX_CHARS:]
    edited = list(dict.fromkeys(_lo(e.attribute) for e in result.edits))
    moment = now if now is not None else datetime.now(UTC)

    block.add_new(VERDICT, "LO", _lo(result.verdict))
    block.add_new(FINDING_CODES, "LO", codes or None)
    block.add_new(ROW_SPACING, "DS", _ds(eff.row_mm))
    block.add_new(COLUMN_SPACING, "DS", _ds(eff.column_mm))
    block.add_new(SPACING_SOURCE, "LO", _lo(eff.source) if eff.source else None)
    block.add_new(CALIBRATION, "LO", _lo(eff.calibration) if eff.calibration else None)
    block.add_new(NODE_VERSION, "LO", _lo(f"spacing-scp {version}"))
    block.add_new(PROCESSED_AT, "DT", format_dt(moment))
    block.add_new(SUMMARY, "LT", summary)
    block.add_new(EDITED_ATTRIBUTES, "LO", edited or None)


def read_annotation(ds: Dataset, creator: str = DEFAULT_CREATOR) -> dict[int, str | None]:
    """The values of the node's block as text, by offset (empty dict if absent)."""
    slots = _creator_slots(ds, PRIVATE_GROUP, creator)
    if not slots:
        return {}
    values: dict[int, str | None] = {}
    for tag in _block_tags(ds, PRIVATE_GROUP, slots[0]):
        elem = ds.get_item(tag)
        text = element_text(elem)
        if isinstance(elem, RawDataElement) and text is not None:
            text = text.rstrip(" \x00")
        values[tag.element & 0xFF] = text
    return values
