"""Build DICOM headers byte by byte for the spacing pipeline tests.

pydicom refuses (or reformats) the defective values the pipeline must handle
(``0.5mm``, ``0,5``, 19-character DS, wrong VRs), so the tests encode the data
set themselves and read it back with ``dcmread(..., force=True,
stop_before_pixels=True)``: the pipeline sees exactly what it sees in
production, raw elements included.

A spec is a mapping of keyword (optionally ``"Keyword:VR"`` to force a VR,
e.g. ``"PixelSpacing:UN"``) to a value:

* ``str``: the text as written (padded to even length: NUL for UI, else space);
* ``bytes``: the value field as is (padded with NUL when odd);
* ``int``/``float`` or a list of them: binary (US, UL, SS, SL, FD, FL) or text
  (IS, DS) per the VR;
* a list of mappings: a sequence (undefined length items).
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from io import BytesIO
from typing import Any

from pydicom import dcmread
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataset import Dataset

Spec = Mapping[str, Any]

EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
IMPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2"

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
ENHANCED_MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4.1"
DX_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.1.1"
MG_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.1.2"
CR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.1"
US_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.6.1"
SC_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.7"
RT_PLAN_STORAGE = "1.2.840.10008.5.1.4.1.1.481.5"

_LONG_LENGTH_VRS = frozenset(
    {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"}
)
_BINARY = {"US": "H", "SS": "h", "UL": "I", "SL": "i", "FD": "d", "FL": "f"}
_UNDEFINED = 0xFFFFFFFF


def _tag_and_vr(key: str) -> tuple[int, str]:
    name, _, forced = key.partition(":")
    tag = tag_for_keyword(name)
    if tag is None:
        raise KeyError(f"unknown keyword {name!r}")
    vr = forced or dictionary_VR(tag)
    if len(vr) != 2:  # ambiguous VR such as "US or SS"
        vr = vr[:2]
    return int(tag), vr


def _value_bytes(vr: str, value: Any) -> bytes:
    if isinstance(value, bytes):
        return value + b"\x00" if len(value) % 2 else value
    if isinstance(value, str):
        data = value.encode("latin-1")
        if len(data) % 2:
            data += b"\x00" if vr == "UI" else b" "
        return data
    values = list(value) if isinstance(value, list | tuple) else [value]
    if vr in _BINARY:
        return struct.pack(f"<{len(values)}{_BINARY[vr]}", *values)
    return _value_bytes(vr, "\\".join(str(v) for v in values))


def _header(tag: int, vr: str, length: int, implicit: bool) -> bytes:
    group, element = tag >> 16, tag & 0xFFFF
    if implicit:
        return struct.pack("<HHI", group, element, length)
    if vr in _LONG_LENGTH_VRS:
        return struct.pack("<HH2sHI", group, element, vr.encode(), 0, length)
    return struct.pack("<HH2sH", group, element, vr.encode(), length)


def _sequence(tag: int, items: Sequence[Spec], implicit: bool) -> bytes:
    out = [_header(tag, "SQ", _UNDEFINED, implicit)]
    for item in items:
        out.append(struct.pack("<HHI", 0xFFFE, 0xE000, _UNDEFINED))
        out.append(encode_dataset(item, implicit=implicit))
        out.append(struct.pack("<HHI", 0xFFFE, 0xE00D, 0))
    out.append(struct.pack("<HHI", 0xFFFE, 0xE0DD, 0))
    return b"".join(out)


def encode_dataset(spec: Spec, *, implicit: bool = False) -> bytes:
    """Encode ``spec`` as a little endian data set (elements sorted by tag)."""
    elements = sorted((_tag_and_vr(key), value) for key, value in spec.items())
    out = []
    for (tag, vr), value in elements:
        if isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value):
            out.append(_sequence(tag, value, implicit))
            continue
        if vr == "SQ":  # an empty sequence
            out.append(_sequence(tag, [], implicit))
            continue
        data = _value_bytes(vr, value)
        out.append(_header(tag, vr, len(data), implicit) + data)
    return b"".join(out)


def _file_meta(transfer_syntax: str) -> bytes:
    body = encode_dataset({"TransferSyntaxUID": transfer_syntax})
    group_length = _header(0x00020000, "UL", 4, False) + struct.pack("<I", len(body))
    return group_length + body


def encode_file(spec: Spec, *, implicit: bool = False) -> bytes:
    """A whole Part 10 file: preamble, DICM, file meta, data set."""
    syntax = IMPLICIT_VR_LITTLE_ENDIAN if implicit else EXPLICIT_VR_LITTLE_ENDIAN
    return b"\x00" * 128 + b"DICM" + _file_meta(syntax) + encode_dataset(spec, implicit=implicit)


def build(spec: Spec, *, implicit: bool = False) -> Dataset:
    """Encode ``spec`` and read it back as the node does."""
    return dcmread(
        BytesIO(encode_file(spec, implicit=implicit)), force=True, stop_before_pixels=True
    )


# --------------------------------------------------------------------------- typical headers

_IDENTITY_IOP = "1\\0\\0\\0\\1\\0"


def ct(**overrides: Any) -> dict[str, Any]:
    """A single-frame axial CT header, 512 x 512, PS 0.5\\0.5."""
    spec: dict[str, Any] = {
        "SOPClassUID": CT_IMAGE_STORAGE,
        "SOPInstanceUID": "1.2.3.4.5",
        "Modality": "CT",
        "Manufacturer": "ACME",
        "ManufacturerModelName": "Scanner 9000",
        "StationName": "CT01",
        "Rows": 512,
        "Columns": 512,
        "PixelSpacing": "0.5\\0.5",
        "ImagePositionPatient": "-128\\-128\\0",
        "ImageOrientationPatient": _IDENTITY_IOP,
        "SliceThickness": "1",
        "FrameOfReferenceUID": "1.2.3.4",
    }
    spec.update(overrides)
    return {k: v for k, v in spec.items() if v is not None}


def dx(**overrides: Any) -> dict[str, Any]:
    """A DX header with Imager Pixel Spacing 0.15\\0.15 and no Pixel Spacing."""
    spec: dict[str, Any] = {
        "SOPClassUID": DX_IMAGE_STORAGE,
        "SOPInstanceUID": "1.2.3.4.6",
        "Modality": "DX",
        "Manufacturer": "ACME",
        "Rows": 2048,
        "Columns": 2500,
        "ImagerPixelSpacing": "0.15\\0.15",
    }
    spec.update(overrides)
    return {k: v for k, v in spec.items() if v is not None}


def us_region(delta_x: float, delta_y: float, units: tuple[int, int] = (3, 3)) -> dict[str, Any]:
    """One item of Sequence of Ultrasound Regions (0018,6011)."""
    return {
        "RegionSpatialFormat": 1,
        "RegionDataType": 1,
        "RegionLocationMinX0": 0,
        "RegionLocationMinY0": 0,
        "RegionLocationMaxX1": 399,
        "RegionLocationMaxY1": 299,
        "PhysicalUnitsXDirection": units[0],
        "PhysicalUnitsYDirection": units[1],
        "PhysicalDeltaX": delta_x,
        "PhysicalDeltaY": delta_y,
    }


def us(regions: list[dict[str, Any]], **overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "SOPClassUID": US_IMAGE_STORAGE,
        "SOPInstanceUID": "1.2.3.4.7",
        "Modality": "US",
        "Rows": 600,
        "Columns": 800,
        "SequenceOfUltrasoundRegions": regions,
    }
    spec.update(overrides)
    return spec


def pixel_measures(spacing: str) -> dict[str, Any]:
    """A functional groups item holding a Pixel Measures Sequence (0028,9110)."""
    return {"PixelMeasuresSequence": [{"PixelSpacing": spacing, "SliceThickness": "1"}]}


def frame(spacing: str | None, z: float, measures_items: int = 1) -> dict[str, Any]:
    """A Per-frame Functional Groups item: Plane Position and, optionally, Pixel Measures."""
    item: dict[str, Any] = {"PlanePositionSequence": [{"ImagePositionPatient": f"0\\0\\{z:g}"}]}
    if spacing is not None:
        item["PixelMeasuresSequence"] = [{"PixelSpacing": spacing}] * measures_items
    return item


def enhanced_mr(
    shared: dict[str, Any] | None, frames: list[dict[str, Any]], **overrides: Any
) -> dict[str, Any]:
    shared_item: dict[str, Any] = dict(shared or {})
    shared_item.setdefault("PlaneOrientationSequence", [{"ImageOrientationPatient": _IDENTITY_IOP}])
    spec: dict[str, Any] = {
        "SOPClassUID": ENHANCED_MR_IMAGE_STORAGE,
        "SOPInstanceUID": "1.2.3.4.8",
        "Modality": "MR",
        "Rows": 256,
        "Columns": 256,
        "NumberOfFrames": str(len(frames)),
        "SharedFunctionalGroupsSequence": [shared_item],
        "PerFrameFunctionalGroupsSequence": frames,
    }
    spec.update(overrides)
    return spec


def sc(**overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "SOPClassUID": SC_IMAGE_STORAGE,
        "SOPInstanceUID": "1.2.3.4.9",
        "Modality": "OT",
        "Rows": 100,
        "Columns": 100,
    }
    spec.update(overrides)
    return {k: v for k, v in spec.items() if v is not None}
