"""Apply the pipeline's edits to a header and record them the standard way.

Every change the node makes to a received instance is recorded in the SOP
Common module (PS3.3 C.12.1), as PS3.3 C.12.1.1.9 "Original Attributes
Sequence" describes for a receiver that coerces or corrects attributes
without changing the SOP Instance UID:

* one new item of Original Attributes Sequence (0400,0561) per call (one
  modifying event); items already present are kept ("Any existing Items in
  the Original Attributes Sequence shall be preserved");
* in it, Modified Attributes Sequence (0400,0550) with exactly one item that
  holds the previous value of every modified or removed top-level attribute.
  "If an Attribute within a Sequence was modified or removed, the entire prior
  value of the Sequence shall be placed in the Modified Attributes Sequence;
  this applies recursively up to the enclosing Sequence Attribute in the top
  level Data Set": an edit of Pixel Spacing inside the Shared Functional
  Groups Sequence records the whole previous (5200,9229);
* "If an Attribute was modified or removed because its value was
  nonconforming to its Value Representation or Value Multiplicity, it shall
  be included in the Modified Attributes Sequence with a zero length value."
  Its received bytes are then kept, unchanged, in an item of Nonconforming
  Modified Attributes Sequence (0400,0551): Selector Attribute (0072,0026),
  Selector Value Number (0072,0028) = 0 (the whole element), for a nested
  element Selector Sequence Pointer (0072,0052) with Selector Sequence Pointer
  Items (0074,1057) (item numbers, first item = 1), and Nonconforming Data
  Element Value (0400,0552) = the value field exactly as received;
* Attribute Modification DateTime (0400,0562), Modifying System (0400,0563)
  (the node's AE title), Source of Previous Values (0400,0564) (Type 2, sent
  empty: the node does not know it), Reason for the Attribute Modification
  (0400,0565): ``CORRECT`` if any edit corrects an error, else ``COERCE``;
* Instance Coercion DateTime (0008,0015) is set to the same time.

A previous value that conforms is copied as the element that was read: a
:class:`~pydicom.dataelem.RawDataElement` never decoded is put in the item
as it is, so its bytes are written back unchanged (same transfer syntax),
and a decoded element is deep-copied.  Leaf values are never decoded here
(only the sequences on an edit's path are), so a value pydicom would refuse
(e.g. ``0,5`` under ``config.settings.reading_validation_mode = RAISE``) is
still recorded and replaced; no pydicom setting is changed here, not even
for a while: the settings are process-wide and the node stores instances on
several threads (the node sets ``reading_validation_mode`` once, at
start-up).  Every value written is checked against its VR and VM first.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from pydicom import config
from pydicom.datadict import dictionary_VM, dictionary_VR, tag_for_keyword
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence as DicomSequence
from pydicom.tag import BaseTag, Tag
from pydicom.valuerep import validate_value

from scp.pipeline.ds import DS_MAX_BYTES, DS_PATTERN
from scp.pipeline.model import Edit, ElementPath

#: (0400,0561) Original Attributes Sequence, PS3.3 C.12.1.1.9.
ORIGINAL_ATTRIBUTES_SEQUENCE = Tag(0x0400, 0x0561)
#: (0008,0015) Instance Coercion DateTime, PS3.3 C.12.1.
INSTANCE_COERCION_DATETIME = Tag(0x0008, 0x0015)
#: Elements an edit may never touch: the record itself, pixel data, file meta.
_PROTECTED = frozenset(
    {
        ORIGINAL_ATTRIBUTES_SEQUENCE,
        INSTANCE_COERCION_DATETIME,
        Tag(0x0008, 0x0018),  # SOP Instance UID is kept (PS3.3 C.12.1.1.9)
        Tag(0x7FE0, 0x0008),
        Tag(0x7FE0, 0x0009),
        Tag(0x7FE0, 0x0010),
    }
)

LO_MAX_CHARS = 64

#: String VRs whose values are split on backslash (PS3.5 6.4).
_MULTI_VALUED_STRING_VRS = frozenset(
    {"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "PN", "SH", "TM", "UC", "UI"}
)
_SINGLE_VALUED_STRING_VRS = frozenset({"LT", "ST", "UR", "UT"})


class EditError(ValueError):
    """An edit cannot be applied (bad path, stale ``old``, invalid ``new``)."""


def format_dt(moment: datetime) -> str:
    """``moment`` as a DT value (PS3.5 6.2): ``YYYYMMDDHHMMSS.FFFFFF&ZZXX``.

    The UTC offset is included only for an aware ``datetime``.
    """
    text = moment.strftime("%Y%m%d%H%M%S.%f")
    if moment.utcoffset() is not None:
        text += moment.strftime("%z")
    return text


def check_lo(value: str, name: str) -> str:
    """``value`` if valid for LO (PS3.5 6.2: 64 chars, no backslash or controls)."""
    if len(value) > LO_MAX_CHARS:
        raise EditError(f"{name} {value!r} is longer than {LO_MAX_CHARS} characters (LO)")
    if "\\" in value or any(ord(c) < 0x20 and c != "\x1b" for c in value):
        raise EditError(f"{name} {value!r} holds a backslash or control character (LO)")
    return value


def vm_allows(vm: str, count: int) -> bool:
    """Whether ``count`` values satisfy a PS3.6 VM such as ``1``, ``2``, ``1-3``, ``2-2n``."""
    if count == 0:
        return True  # an empty value is a matter of Type (PS3.5 7.4), not VM
    if "-" not in vm:
        return vm.isdigit() and count == int(vm)
    low, high = vm.split("-", 1)
    if not low.isdigit() or count < int(low):
        return False
    if high == "n":
        return True
    if high.endswith("n"):  # "2-2n", "3-3n": a multiple of the step
        step = int(high[:-1] or "1")
        return count % step == 0
    return high.isdigit() and count <= int(high)


def value_problem(vr: str, vm: str | None, text: str) -> str | None:
    """Why ``text`` (a string value as encoded) does not conform, or ``None``.

    Checks the VR of every value (for DS: PS3.5 6.2 syntax and at most 16
    bytes once padding is stripped, rulebook A.1, A.2, A.4) and the VM of
    PS3.6 (rulebook A.3).  Trailing NUL padding is not part of the value.
    """
    text = text.rstrip("\x00")
    if vr in _SINGLE_VALUED_STRING_VRS:
        values = [text] if text else []
    elif vr in _MULTI_VALUED_STRING_VRS:
        values = text.split("\\") if text.strip(" ") else []
    else:
        return None  # binary and sequence values are not checked here
    if vm is not None and not vm_allows(vm, len(values)):
        return f"{len(values)} values where VM is {vm}"
    for index, value in enumerate(values, start=1):
        if vr == "DS":
            if not DS_PATTERN.fullmatch(value):
                return f"value {index} {value!r} is not a decimal string"
            if len(value.strip(" ")) > DS_MAX_BYTES:  # padding aside (rule 4)
                return f"value {index} {value!r} is longer than {DS_MAX_BYTES} bytes"
            continue
        try:
            validate_value(vr, value.strip(" "), config.RAISE)
        except ValueError as exc:
            return f"value {index}: {exc}"
    return None


def element_text(elem: DataElement | RawDataElement | None) -> str | None:
    """The value of a string element as encoded text, without decoding it twice.

    A raw element's bytes are read as Latin-1 (every byte kept); a decoded
    element is re-joined with backslashes, keeping each value's original
    string where pydicom remembers it (DS, IS).  ``None`` if absent.
    """
    if elem is None:
        return None
    value = elem.value
    if value is None:
        return ""
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("latin-1")
    if isinstance(value, MultiValue | list | tuple):
        return "\\".join(_one_text(v) for v in value)
    return _one_text(value)


def _one_text(value: object) -> str:
    original = getattr(value, "original_string", None)
    if isinstance(original, str):
        return original
    return "" if value is None else str(value)


def element_bytes(elem: DataElement | RawDataElement) -> bytes:
    """The value field of ``elem`` as received, for Nonconforming Data Element Value.

    Exact for a raw element; for an element pydicom already decoded, the text
    it kept (string VRs only), padded to even length with a space.
    """
    if isinstance(elem, RawDataElement):
        return bytes(elem.value or b"")
    data = (element_text(elem) or "").encode("latin-1", errors="replace")
    return data + b" " if len(data) % 2 else data


def _implicit(elem: DataElement | RawDataElement) -> bool:
    return bool(getattr(elem, "is_implicit_VR", False))


def _normalized(text: str | None) -> list[str] | None:
    if text is None:
        return None
    text = text.rstrip("\x00")
    if not text.strip(" "):
        return []
    return [v.strip(" \x00") for v in text.split("\\")]


@dataclass
class _Plan:
    edit: Edit
    container: Dataset
    leaf: BaseTag
    vr: str
    pointers: list[tuple[BaseTag, int]]  # (sequence tag, item index) from the top level
    nonconforming: str | None  # why the received value does not conform
    received: DataElement | RawDataElement | None

    @property
    def top(self) -> BaseTag:
        return self.pointers[0][0] if self.pointers else self.leaf


def _keyword_tag(name: str | int, path: ElementPath) -> BaseTag:
    if not isinstance(name, str):
        raise EditError(f"path {path!r}: expected a keyword, got {name!r}")
    tag = tag_for_keyword(name)
    if tag is None:
        raise EditError(f"path {path!r}: {name!r} is not a DICOM keyword")
    return Tag(tag)


def _resolve(ds: Dataset, path: ElementPath) -> tuple[Dataset, BaseTag, list[tuple[BaseTag, int]]]:
    """Walk ``path`` (keyword, index, keyword, index, ..., keyword) down to its leaf."""
    if not path or len(path) % 2 == 0:
        raise EditError(f"path {path!r} must be keywords and item indexes ending with a keyword")
    container = ds
    pointers: list[tuple[BaseTag, int]] = []
    for i in range(0, len(path) - 1, 2):
        seq_tag = _keyword_tag(path[i], path)
        index = path[i + 1]
        if not isinstance(index, int) or isinstance(index, bool):
            raise EditError(f"path {path!r}: expected an item index after {path[i]!r}")
        if seq_tag not in container:
            raise EditError(f"path {path!r}: {path[i]} is absent")
        elem = container[seq_tag]
        if elem.VR != "SQ" or not isinstance(elem.value, DicomSequence):
            raise EditError(f"path {path!r}: {path[i]} is not a sequence")
        if not 0 <= index < len(elem.value):
            raise EditError(f"path {path!r}: {path[i]} has no item {index}")
        pointers.append((seq_tag, index))
        container = elem.value[index]
    leaf = _keyword_tag(path[-1], path)
    if (not pointers and leaf in _PROTECTED) or leaf.group <= 0x0002:
        raise EditError(f"path {path!r}: {path[-1]} may not be edited")
    return container, leaf, pointers


def _plan(ds: Dataset, edit: Edit, current: dict[ElementPath, str | None]) -> _Plan:
    container, leaf, pointers = _resolve(ds, edit.path)
    vr = dictionary_VR(leaf)
    if len(vr) != 2 or vr == "SQ":
        raise EditError(f"{edit.attribute}: a value of VR {vr!r} cannot be edited")
    vm = dictionary_VM(leaf)
    received = container.get_item(leaf) if leaf in container else None
    original_text = element_text(received)
    before = current.get(edit.path, original_text)
    if _normalized(before) != _normalized(edit.old):
        raise EditError(
            f"stale edit {edit.code} of {edit.attribute}: expected {edit.old!r}, found {before!r}"
        )
    if edit.new is not None:
        problem = value_problem(vr, vm, edit.new)
        if problem:
            raise EditError(f"new value {edit.new!r} of {edit.attribute} is invalid: {problem}")
    current[edit.path] = edit.new
    nonconforming = None
    if received is not None and original_text is not None:
        nonconforming = value_problem(vr, vm, original_text)
        written = getattr(received, "VR", None)
        if nonconforming is None and written not in (None, vr) and not _implicit(received):
            nonconforming = f"written with VR {written}, not {vr} (PS3.6)"
    return _Plan(edit, container, leaf, vr, pointers, nonconforming, received)


def _new_item(ds: Dataset) -> Dataset:
    """An empty sequence item encoded like ``ds``, so copied raw elements stay raw."""
    charset = ds.original_character_set
    item = Dataset(parent_encoding=charset)
    implicit, little = ds.original_encoding
    item.set_original_encoding(implicit, little, charset)
    return item


def _copy_element(elem: DataElement | RawDataElement) -> DataElement | RawDataElement:
    # A RawDataElement is an immutable tuple of the received bytes: share it.
    return elem if isinstance(elem, RawDataElement) else copy.deepcopy(elem)


def _blank_nested(copy_elem: DataElement, plan: _Plan) -> None:
    """In a copy of the top-level sequence, give a nonconforming leaf a zero length."""
    container: Dataset = copy_elem.value[plan.pointers[0][1]]
    for seq_tag, index in plan.pointers[1:]:
        container = container[seq_tag].value[index]
    container[plan.leaf] = DataElement(plan.leaf, plan.vr, None)


def _nonconforming_item(plan: _Plan) -> Dataset:
    """Item of Nonconforming Modified Attributes Sequence (0400,0551), PS3.3 C.12.1.1.9."""
    assert plan.received is not None
    item = Dataset()
    item.SelectorAttribute = plan.leaf
    item.SelectorValueNumber = 0  # the whole element, every value
    if plan.pointers:
        item.SelectorSequencePointer = [tag for tag, _ in plan.pointers]
        item.SelectorSequencePointerItems = [index + 1 for _, index in plan.pointers]
    value = element_bytes(plan.received)
    item.NonconformingDataElementValue = value + b"\x00" if len(value) % 2 else value
    return item


def _unique(tags: Iterable[BaseTag]) -> list[BaseTag]:
    return list(dict.fromkeys(tags))


def apply_edits(ds: Dataset, edits: Sequence[Edit], modifying_system: str, now: datetime) -> None:
    """Apply ``edits`` to the header ``ds`` and record them (PS3.3 C.12.1.1.9).

    ``modifying_system`` is the node's AE title (Modifying System (0400,0563),
    LO).  Each edit's ``old`` must match the value found (padding aside),
    else :class:`EditError` is raised before anything changes; so is an edit
    whose ``new`` is not valid for its VR and VM.  With no edits, nothing
    is done.  The SOP Instance UID is never changed.
    """
    if not edits:
        return
    system = check_lo(modifying_system.strip(" "), "Modifying System (0400,0563)")
    stamp = format_dt(now)
    reason = "CORRECT" if any(e.reason == "CORRECT" for e in edits) else "COERCE"

    # 1. Received top-level elements, before anything is decoded or changed.
    tops: dict[BaseTag, DataElement | RawDataElement | None] = {}
    for edit in edits:
        top = _keyword_tag(edit.path[0], edit.path) if edit.path else None
        if top is not None and top not in tops:
            tops[top] = _copy_element(ds.get_item(top)) if top in ds else None

    # 2. Resolve and check every edit; nothing changes if one is wrong.
    current: dict[ElementPath, str | None] = {}
    plans = [_plan(ds, edit, current) for edit in edits]

    # 3. The previous values (Modified Attributes Sequence, one item).
    modified = _new_item(ds)
    nonconforming: list[Dataset] = []
    first_seen: dict[tuple[BaseTag, ElementPath], _Plan] = {}
    for plan in plans:
        first_seen.setdefault((plan.top, plan.edit.path), plan)
    for top in _unique(plan.top for plan in plans):
        previous = tops.get(top)
        own = [p for (t, _), p in first_seen.items() if t == top]
        bad = [p for p in own if p.nonconforming]
        nonconforming.extend(_nonconforming_item(p) for p in bad)
        if previous is None or (not own[0].pointers and bad):
            # absent before (PS3.3: "may be present ... with a zero length
            # value"), or nonconforming: zero length, bytes kept in (0400,0551)
            modified[top] = DataElement(top, own[0].vr if not own[0].pointers else "SQ", None)
        elif bad:
            sequence_copy = copy.deepcopy(ds[top])
            for plan in bad:
                _blank_nested(sequence_copy, plan)
            modified[top] = sequence_copy
        else:
            modified[top] = previous

    existing = ds.get(ORIGINAL_ATTRIBUTES_SEQUENCE)  # the element (a tag was given)
    if existing is not None and not isinstance(existing.value, DicomSequence):
        raise EditError("Original Attributes Sequence (0400,0561) is not a sequence")

    # 4. Apply.
    for plan in plans:
        if plan.edit.new is None:
            if plan.leaf in plan.container:
                del plan.container[plan.leaf]
        else:
            plan.container[plan.leaf] = DataElement(plan.leaf, plan.vr, plan.edit.new)

    # 5. Record: one new Original Attributes Sequence item.
    record = _new_item(ds)
    record.AttributeModificationDateTime = stamp
    record.ModifyingSystem = system
    record.ReasonForTheAttributeModification = reason
    record.SourceOfPreviousValues = ""
    record.ModifiedAttributesSequence = DicomSequence([modified])
    if nonconforming:
        record.NonconformingModifiedAttributesSequence = DicomSequence(nonconforming)
    if existing is not None:
        existing.value.append(record)
    else:
        ds.OriginalAttributesSequence = DicomSequence([record])
    ds.InstanceCoercionDateTime = stamp
