"""Gather every spacing source of a header into one typed :class:`SpacingReport`.

Text is read raw: :func:`raw_text` takes the element's bytes as received
(``Dataset.get_item`` returns the unconverted ``RawDataElement`` for a header
read with ``dcmread(..., force=True)`` or decoded by pynetdicom), so a value
pydicom would refuse, coerce or reformat is seen exactly as the sender wrote
it.  Binary values (US, UL, FD) are unpacked from the raw bytes with the
element's own byte order.  Nothing here raises on a malformed header: an
element that cannot be read is reported as absent, and the dataset is never
modified or copied; the pixel data is never touched.

Attributes gathered (PS3.3 sections):

* Pixel Spacing (0028,0030): Image Plane Module C.7.6.2 and Basic Pixel
  Spacing Calibration Macro 10.7 (Table 10-10); value order 10.7.1.3.
* Imager Pixel Spacing (0018,1164): DX Detector Module C.8.11.4, CR Image
  Module C.8.1.2, X-Ray Acquisition Module C.8.7.2.
* Nominal Scanned Pixel Spacing (0018,2010): SC Image Module C.8.6.2,
  SC Multi-frame Image Module C.8.6.3.
* Pixel Spacing Calibration Type (0028,0A02) and Description (0028,0A04):
  10.7.1.2.
* Estimated Radiographic Magnification Factor (0018,1114), Distance Source to
  Detector (0018,1110), Distance Source to Patient (0018,1111): DX Positioning
  Module C.8.11.5, XRF Positioner Module C.8.7.6.
* Pixel Aspect Ratio (0028,0034): Image Pixel Module C.7.6.3.
* Sequence of Ultrasound Regions (0018,6011): US Region Calibration Module
  C.8.5.5.
* Pixel Measures Sequence (0028,9110) (C.7.6.16.2.1), Plane Position Sequence
  (0020,9113) (C.7.6.16.2.3) and Plane Orientation Sequence (0020,9116)
  (C.7.6.16.2.4) in Shared (5200,9229) and Per-frame (5200,9230) Functional
  Groups (Multi-frame Functional Groups Module C.7.6.16).
* Image Position/Orientation (Patient) (0020,0032)/(0020,0037), Slice
  Thickness (0018,0050), Spacing Between Slices (0018,0088): C.7.6.2.
* Reconstruction Diameter (0018,1100): CT Image Module C.8.2.1.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from functools import lru_cache

from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence as DicomSequence

from .ds import NormalizedDS, normalize_ds
from .model import Edit, ElementPath

__all__ = [
    "DSAttr",
    "FunctionalGroup",
    "PixelMeasures",
    "SpacingReport",
    "UltrasoundRegion",
    "attribute_label",
    "clip",
    "gather",
    "raw_text",
    "tag_text",
]

# Tags used on every call, resolved once.
_TAG: dict[str, int] = {}


def _tag(keyword: str) -> int:
    tag = _TAG.get(keyword)
    if tag is None:
        found = tag_for_keyword(keyword)
        if found is None:
            raise KeyError(keyword)
        tag = _TAG[keyword] = int(found)
    return tag


#: Display names for the attributes the pipeline cites in its messages.
_NAMES: dict[str, str] = {
    "PixelSpacing": "Pixel Spacing",
    "ImagerPixelSpacing": "Imager Pixel Spacing",
    "NominalScannedPixelSpacing": "Nominal Scanned Pixel Spacing",
    "PixelSpacingCalibrationType": "Pixel Spacing Calibration Type",
    "PixelSpacingCalibrationDescription": "Pixel Spacing Calibration Description",
    "EstimatedRadiographicMagnificationFactor": "Estimated Radiographic Magnification Factor",
    "DistanceSourceToDetector": "Distance Source to Detector",
    "DistanceSourceToPatient": "Distance Source to Patient",
    "PixelAspectRatio": "Pixel Aspect Ratio",
    "SequenceOfUltrasoundRegions": "Sequence of Ultrasound Regions",
    "PixelMeasuresSequence": "Pixel Measures Sequence",
    "SharedFunctionalGroupsSequence": "Shared Functional Groups Sequence",
    "PerFrameFunctionalGroupsSequence": "Per-frame Functional Groups Sequence",
    "PlanePositionSequence": "Plane Position Sequence",
    "PlaneOrientationSequence": "Plane Orientation Sequence",
    "ImagePositionPatient": "Image Position (Patient)",
    "ImageOrientationPatient": "Image Orientation (Patient)",
    "SliceThickness": "Slice Thickness",
    "SpacingBetweenSlices": "Spacing Between Slices",
    "ReconstructionDiameter": "Reconstruction Diameter",
    "Rows": "Rows",
    "Columns": "Columns",
}


def tag_text(keyword: str) -> str:
    """``"PixelSpacing"`` -> ``"(0028,0030)"``."""
    tag = _tag(keyword)
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


@lru_cache(maxsize=128)
def attribute_label(keyword: str) -> str:
    """``"PixelSpacing"`` -> ``"Pixel Spacing (0028,0030)"`` for messages."""
    return f"{_NAMES.get(keyword, keyword)} {tag_text(keyword)}"


def clip(text: str, limit: int = 64) -> str:
    """``text`` shortened for a message (a hostile header may send 64 KiB)."""
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


# --------------------------------------------------------------------------- raw access


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
        tag = _tag(key) if isinstance(key, str) else int(key)
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


def _first_number(ds: Dataset, keyword: str, vr: str) -> float | None:
    values = _binary_values(ds, _tag(keyword), vr)
    if not values or not math.isfinite(values[0]):
        return None
    return values[0]


def _first_int(ds: Dataset, keyword: str, vr: str = "US") -> int | None:
    number = _first_number(ds, keyword, vr)
    return None if number is None else int(number)


def _items(ds: Dataset, keyword: str) -> list[Dataset] | None:
    """Items of a sequence element; ``None`` when absent or not a sequence."""
    tag = _tag(keyword)
    try:
        if tag not in ds:
            return None
        value = ds[tag].value
    except Exception:
        return None
    if isinstance(value, DicomSequence | list):
        return [item for item in value if isinstance(item, Dataset)]
    return None


def _int_text(ds: Dataset, keyword: str) -> int | None:
    """An IS value (e.g. Number of Frames) parsed leniently, for reporting."""
    text = raw_text(ds, keyword)
    if not text:
        return None
    try:
        return int(text.split("\\")[0].strip())
    except ValueError:
        return None


# --------------------------------------------------------------------------- typed report


@dataclass(frozen=True)
class DSAttr:
    """One occurrence of a DS element: where it is and its raw text."""

    keyword: str
    path: ElementPath
    raw: str  # as received, end padding stripped ("" when present but empty)

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


def _ds(ds: Dataset, keyword: str, prefix: ElementPath = ()) -> DSAttr | None:
    text = raw_text(ds, keyword)
    return None if text is None else DSAttr(keyword, (*prefix, keyword), text)


@dataclass(frozen=True)
class UltrasoundRegion:
    """One item of Sequence of Ultrasound Regions (0018,6011), PS3.3 C.8.5.5.

    Physical Units 3 is cm (C.8.5.5.1.15); a region is spatial only when both
    directions are in cm and both deltas are finite and non-zero (rule 15).
    Physical Delta X is the horizontal (column) spacing, Y the vertical (row).
    """

    index: int
    spatial_format: int | None = None
    data_type: int | None = None
    units_x: int | None = None
    units_y: int | None = None
    delta_x: float | None = None
    delta_y: float | None = None
    min_x0: int | None = None
    min_y0: int | None = None
    max_x1: int | None = None
    max_y1: int | None = None

    @property
    def is_spatial(self) -> bool:
        return (
            self.units_x == 3
            and self.units_y == 3
            and self.delta_x is not None
            and self.delta_y is not None
            and self.delta_x != 0.0
            and self.delta_y != 0.0
        )

    @property
    def row_mm(self) -> float | None:
        """Distance between rows in mm: |Physical Delta Y| x 10 (cm to mm)."""
        return abs(self.delta_y) * 10.0 if self.is_spatial and self.delta_y is not None else None

    @property
    def column_mm(self) -> float | None:
        """Distance between columns in mm: |Physical Delta X| x 10."""
        return abs(self.delta_x) * 10.0 if self.is_spatial and self.delta_x is not None else None


def _region(index: int, item: Dataset) -> UltrasoundRegion:
    return UltrasoundRegion(
        index=index,
        spatial_format=_first_int(item, "RegionSpatialFormat"),
        data_type=_first_int(item, "RegionDataType"),
        units_x=_first_int(item, "PhysicalUnitsXDirection"),
        units_y=_first_int(item, "PhysicalUnitsYDirection"),
        delta_x=_first_number(item, "PhysicalDeltaX", "FD"),
        delta_y=_first_number(item, "PhysicalDeltaY", "FD"),
        min_x0=_first_int(item, "RegionLocationMinX0", "UL"),
        min_y0=_first_int(item, "RegionLocationMinY0", "UL"),
        max_x1=_first_int(item, "RegionLocationMaxX1", "UL"),
        max_y1=_first_int(item, "RegionLocationMaxY1", "UL"),
    )


@dataclass(frozen=True)
class PixelMeasures:
    """A Pixel Measures Sequence (0028,9110) inside one functional groups item."""

    path: ElementPath  # of the sequence element itself
    pixel_spacing: tuple[DSAttr | None, ...]  # one entry per item
    slice_thickness: DSAttr | None = None  # of the first item
    spacing_between_slices: DSAttr | None = None

    @property
    def item_count(self) -> int:
        return len(self.pixel_spacing)

    @property
    def first(self) -> DSAttr | None:
        return self.pixel_spacing[0] if self.pixel_spacing else None


@dataclass(frozen=True)
class FunctionalGroup:
    """One item of the Shared or Per-frame Functional Groups Sequence."""

    path: ElementPath  # e.g. ("PerFrameFunctionalGroupsSequence", 3)
    pixel_measures: PixelMeasures | None = None
    position: DSAttr | None = None  # Plane Position Sequence > Image Position (Patient)
    orientation: DSAttr | None = None  # Plane Orientation Sequence > Image Orientation


def _pixel_measures(item: Dataset, prefix: ElementPath) -> PixelMeasures | None:
    pm_items = _items(item, "PixelMeasuresSequence")
    if pm_items is None:
        return None
    path = (*prefix, "PixelMeasuresSequence")
    spacings = tuple(_ds(pm, "PixelSpacing", (*path, i)) for i, pm in enumerate(pm_items))
    first = pm_items[0] if pm_items else None
    return PixelMeasures(
        path=path,
        pixel_spacing=spacings,
        slice_thickness=_ds(first, "SliceThickness", (*path, 0)) if first is not None else None,
        spacing_between_slices=(
            _ds(first, "SpacingBetweenSlices", (*path, 0)) if first is not None else None
        ),
    )


def _nested(item: Dataset, sequence: str, keyword: str, prefix: ElementPath) -> DSAttr | None:
    inner = _items(item, sequence)
    if not inner:
        return None
    return _ds(inner[0], keyword, (*prefix, sequence, 0))


def _functional_groups(ds: Dataset, keyword: str) -> tuple[FunctionalGroup, ...]:
    items = _items(ds, keyword)
    if not items:
        return ()
    groups = []
    for index, item in enumerate(items):
        prefix: ElementPath = (keyword, index)
        groups.append(
            FunctionalGroup(
                path=prefix,
                pixel_measures=_pixel_measures(item, prefix),
                position=_nested(item, "PlanePositionSequence", "ImagePositionPatient", prefix),
                orientation=_nested(
                    item, "PlaneOrientationSequence", "ImageOrientationPatient", prefix
                ),
            )
        )
    return tuple(groups)


#: Modalities of projection radiography (rulebook section C).
PROJECTION_MODALITIES = frozenset({"CR", "DX", "MG", "IO", "XA", "RF"})
#: Cross-sectional modalities whose image IODs make Pixel Spacing Type 1
#: (Image Plane Module C.7.6.2 or Pixel Measures in the functional groups).
CROSS_SECTIONAL_MODALITIES = frozenset({"CT", "MR", "PT"})
#: Secondary Capture Image Storage and the Multi-frame SC SOP Classes (.7.1 - .7.4).
SECONDARY_CAPTURE_PREFIX = "1.2.840.10008.5.1.4.1.1.7"


@dataclass(frozen=True)
class SpacingReport:
    """Every spacing source of one instance, raw text and parsed values.

    DS attributes are :class:`DSAttr` (raw text plus ``parsed`` values), absent
    ones ``None``.  Identification fields are the header text with padding
    stripped.
    """

    modality: str | None = None
    sop_class_uid: str | None = None
    manufacturer: str | None = None
    manufacturer_model_name: str | None = None
    station_name: str | None = None
    device_serial_number: str | None = None
    rows: int | None = None
    columns: int | None = None
    number_of_frames: int | None = None
    pixel_spacing: DSAttr | None = None
    imager_pixel_spacing: DSAttr | None = None
    nominal_scanned_pixel_spacing: DSAttr | None = None
    calibration_type: str | None = None  # (0028,0A02)
    calibration_description: str | None = None  # (0028,0A04)
    ermf: DSAttr | None = None  # (0018,1114)
    distance_source_to_detector: DSAttr | None = None  # SID (0018,1110)
    distance_source_to_patient: DSAttr | None = None  # SOD (0018,1111)
    pixel_aspect_ratio: str | None = None  # IS (0028,0034), raw text
    ultrasound_regions: tuple[UltrasoundRegion, ...] | None = None  # None: no sequence
    shared_groups: tuple[FunctionalGroup, ...] = ()
    per_frame_groups: tuple[FunctionalGroup, ...] = ()
    image_position: DSAttr | None = None
    image_orientation: DSAttr | None = None
    slice_thickness: DSAttr | None = None
    spacing_between_slices: DSAttr | None = None
    reconstruction_diameter: DSAttr | None = None
    header: Mapping[str, str] = field(default_factory=dict)  # swap-rule match values

    # ---- classification helpers

    @property
    def is_image(self) -> bool:
        """An image: Rows (0028,0010) and Columns (0028,0011) present and non-zero."""
        return bool(self.rows) and bool(self.columns)

    @property
    def is_projection(self) -> bool:
        return self.modality in PROJECTION_MODALITIES

    @property
    def is_cross_sectional(self) -> bool:
        return self.modality in CROSS_SECTIONAL_MODALITIES

    @property
    def is_secondary_capture(self) -> bool:
        return bool(self.sop_class_uid) and str(self.sop_class_uid).startswith(
            SECONDARY_CAPTURE_PREFIX
        )

    @property
    def has_plane(self) -> bool:
        """IPP and IOP present (top level) or Pixel Measures/Plane macros present."""
        if self.image_position is not None and self.image_orientation is not None:
            return True
        return any(
            g.pixel_measures is not None or g.orientation is not None
            for g in (*self.shared_groups, *self.per_frame_groups)
        )

    @property
    def pixel_measures(self) -> tuple[PixelMeasures, ...]:
        """Every Pixel Measures Sequence, shared first."""
        return tuple(
            g.pixel_measures
            for g in (*self.shared_groups, *self.per_frame_groups)
            if g.pixel_measures is not None
        )

    @property
    def pixel_aspect_ratio_values(self) -> tuple[int, int] | None:
        """PAR as two positive integers (IS, VM 2), or ``None``."""
        text = self.pixel_aspect_ratio
        if not text:
            return None
        parts = text.split("\\")
        if len(parts) != 2:
            return None
        try:
            first, second = (int(p.strip(" ")) for p in parts)
        except ValueError:
            return None
        return (first, second) if first > 0 and second > 0 else None

    def ds_attributes(self) -> Iterable[DSAttr]:
        """Every DS occurrence gathered, top level then functional groups."""
        top = (
            self.pixel_spacing,
            self.imager_pixel_spacing,
            self.nominal_scanned_pixel_spacing,
            self.ermf,
            self.distance_source_to_detector,
            self.distance_source_to_patient,
            self.image_position,
            self.image_orientation,
            self.slice_thickness,
            self.spacing_between_slices,
            self.reconstruction_diameter,
        )
        yield from (a for a in top if a is not None)
        for group in (*self.shared_groups, *self.per_frame_groups):
            pm = group.pixel_measures
            if pm is not None:
                yield from (a for a in pm.pixel_spacing if a is not None)
                if pm.slice_thickness is not None:
                    yield pm.slice_thickness
                if pm.spacing_between_slices is not None:
                    yield pm.spacing_between_slices
            if group.position is not None:
                yield group.position
            if group.orientation is not None:
                yield group.orientation

    def with_edits(self, edits: Iterable[Edit]) -> SpacingReport:
        """The report as it will be once ``edits`` are applied (in order).

        Only DS values are edited; an edit whose ``new`` is ``None`` deletes.
        """
        changes: dict[ElementPath, str | None] = {}
        for edit in edits:
            changes[edit.path] = edit.new
        if not changes:
            return self
        return _apply(self, changes)


def _swap_attr(attr: DSAttr | None, changes: Mapping[ElementPath, str | None]) -> DSAttr | None:
    if attr is None or attr.path not in changes:
        return attr
    new = changes[attr.path]
    return None if new is None else replace(attr, raw=new)


def _apply_group(
    group: FunctionalGroup, changes: Mapping[ElementPath, str | None]
) -> FunctionalGroup:
    pm = group.pixel_measures
    if pm is not None:
        pm = replace(
            pm,
            pixel_spacing=tuple(_swap_attr(a, changes) for a in pm.pixel_spacing),
            slice_thickness=_swap_attr(pm.slice_thickness, changes),
            spacing_between_slices=_swap_attr(pm.spacing_between_slices, changes),
        )
    return replace(
        group,
        pixel_measures=pm,
        position=_swap_attr(group.position, changes),
        orientation=_swap_attr(group.orientation, changes),
    )


_TOP_DS_FIELDS = (
    "pixel_spacing",
    "imager_pixel_spacing",
    "nominal_scanned_pixel_spacing",
    "ermf",
    "distance_source_to_detector",
    "distance_source_to_patient",
    "image_position",
    "image_orientation",
    "slice_thickness",
    "spacing_between_slices",
    "reconstruction_diameter",
)


def _apply(report: SpacingReport, changes: Mapping[ElementPath, str | None]) -> SpacingReport:
    updates: dict[str, object] = {
        name: _swap_attr(getattr(report, name), changes) for name in _TOP_DS_FIELDS
    }
    updates["shared_groups"] = tuple(_apply_group(g, changes) for g in report.shared_groups)
    updates["per_frame_groups"] = tuple(_apply_group(g, changes) for g in report.per_frame_groups)
    return replace(report, **updates)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- gather

#: Header keys a swap rule may match on (policy.SWAP_MATCH_KEYS minus the AE title).
_HEADER_KEYS = (
    "Manufacturer",
    "ManufacturerModelName",
    "StationName",
    "Modality",
    "SOPClassUID",
    "DeviceSerialNumber",
)


def _clean(text: str | None) -> str | None:
    if text is None:
        return None
    return text.strip(" \x00")


def gather(ds: Dataset) -> SpacingReport:
    """Read every spacing source of ``ds`` into a :class:`SpacingReport`.

    Never raises for a malformed header; never converts DS elements; never
    reads the pixel data.
    """
    header = {key: _clean(raw_text(ds, key)) or "" for key in _HEADER_KEYS}
    regions_items = _items(ds, "SequenceOfUltrasoundRegions")
    return SpacingReport(
        modality=header["Modality"] or None,
        sop_class_uid=header["SOPClassUID"] or None,
        manufacturer=header["Manufacturer"] or None,
        manufacturer_model_name=header["ManufacturerModelName"] or None,
        station_name=header["StationName"] or None,
        device_serial_number=header["DeviceSerialNumber"] or None,
        rows=_first_int(ds, "Rows"),
        columns=_first_int(ds, "Columns"),
        number_of_frames=_int_text(ds, "NumberOfFrames"),
        pixel_spacing=_ds(ds, "PixelSpacing"),
        imager_pixel_spacing=_ds(ds, "ImagerPixelSpacing"),
        nominal_scanned_pixel_spacing=_ds(ds, "NominalScannedPixelSpacing"),
        calibration_type=_clean(raw_text(ds, "PixelSpacingCalibrationType")),
        calibration_description=_clean(raw_text(ds, "PixelSpacingCalibrationDescription")),
        ermf=_ds(ds, "EstimatedRadiographicMagnificationFactor"),
        distance_source_to_detector=_ds(ds, "DistanceSourceToDetector"),
        distance_source_to_patient=_ds(ds, "DistanceSourceToPatient"),
        pixel_aspect_ratio=_clean(raw_text(ds, "PixelAspectRatio")),
        ultrasound_regions=(
            None
            if regions_items is None
            else tuple(_region(i, item) for i, item in enumerate(regions_items))
        ),
        shared_groups=_functional_groups(ds, "SharedFunctionalGroupsSequence"),
        per_frame_groups=_functional_groups(ds, "PerFrameFunctionalGroupsSequence"),
        image_position=_ds(ds, "ImagePositionPatient"),
        image_orientation=_ds(ds, "ImageOrientationPatient"),
        slice_thickness=_ds(ds, "SliceThickness"),
        spacing_between_slices=_ds(ds, "SpacingBetweenSlices"),
        reconstruction_diameter=_ds(ds, "ReconstructionDiameter"),
        header=header,
    )
