"""Slice geometry from a DICOM header: one :class:`SliceGeometry` per image or frame.

The only DICOM reading of :mod:`scp.series` is :func:`slices_from_dataset`, which turns a
header into :class:`SliceGeometry` values; everything after it works on those values.

Where the numbers come from
---------------------------
The Image Plane Module (PS3.3 C.7.6.2) gives, per image, Image Position (Patient)
(0020,0032) -- the x, y, z of the centre of the first transmitted pixel, in mm -- and Image
Orientation (Patient) (0020,0037) -- the direction cosines of the first row and of the first
column (PS3.3 C.7.6.2.1.1). Spacing Between Slices (0018,0088) is only a cross-check
(rule 24) and Slice Thickness (0018,0050) is never a spacing (rule 29). Enhanced multi-frame
images carry the same attributes per frame in the Plane Position (0020,9113), Plane
Orientation (0020,9116) and Pixel Measures (0028,9110) functional group macros (PS3.3
C.7.6.16.2.1, C.7.6.16.2.3, C.7.6.16.2.4); each frame is then a slice (rule 19).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from scp.pipeline.ds import decimals_in, ds_number

__all__ = ["SliceGeometry", "slices_from_dataset"]


def _opt_float(value: float | None) -> float | None:
    return None if value is None else float(value)


@dataclass(frozen=True)
class SliceGeometry:
    """Geometry of one slice: a single-frame instance, or one frame of a multi-frame instance.

    ``iop``: Image Orientation (Patient) (0020,0037), 6 direction cosines (row then column).
    ``ipp``: Image Position (Patient) (0020,0032), mm. ``pixel_spacing``: Pixel Spacing
    (0028,0030) as (row spacing, column spacing) in mm (rule 6), or ``None``.
    ``slice_thickness``: (0018,0050); ``spacing_between_slices``: (0018,0088).
    ``frame_number``: 1-based frame of a multi-frame instance, ``None`` for single-frame.
    ``pixel_spacing_decimals``: the decimal places each Pixel Spacing value was written with
    (rule 31; taken from the values when they carry it, ``None`` when unknown); the pixel
    spacing values then carry it too (:class:`scp.pipeline.ds.DSNumber`).
    Sequences are stored as tuples of floats.
    """

    frame_of_reference_uid: str
    rows: int
    columns: int
    iop: tuple[float, ...]
    ipp: tuple[float, ...]
    pixel_spacing: tuple[float, float] | None = None
    slice_thickness: float | None = None
    spacing_between_slices: float | None = None
    modality: str = ""
    sop_instance_uid: str = ""
    frame_number: int | None = None
    pixel_spacing_decimals: tuple[int | None, int | None] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "iop", tuple(float(v) for v in self.iop))
        object.__setattr__(self, "ipp", tuple(float(v) for v in self.ipp))
        object.__setattr__(self, "rows", int(self.rows))
        object.__setattr__(self, "columns", int(self.columns))
        if self.pixel_spacing is not None:
            row, col = self.pixel_spacing
            decimals = self.pixel_spacing_decimals
            if decimals is None and (decimals_in(row) is not None or decimals_in(col) is not None):
                decimals = (decimals_in(row), decimals_in(col))
            if decimals is not None:
                decimals = (decimals[0], decimals[1])
                object.__setattr__(self, "pixel_spacing_decimals", decimals)
                spacing = (ds_number(float(row), decimals[0]), ds_number(float(col), decimals[1]))
            else:
                spacing = (float(row), float(col))
            object.__setattr__(self, "pixel_spacing", spacing)
        object.__setattr__(self, "slice_thickness", _opt_float(self.slice_thickness))
        object.__setattr__(self, "spacing_between_slices", _opt_float(self.spacing_between_slices))

    @property
    def sort_key(self) -> tuple[str, int, tuple[float, ...], tuple[float, ...]]:
        """A deterministic order, used to make batch results independent of input order."""
        return (self.sop_instance_uid, self.frame_number or 0, self.ipp, self.iop)


def _floats(value: Any, count: int) -> tuple[float, ...] | None:
    """``count`` finite floats from a DS/FD value (single or multi-valued), else ``None``."""
    if value is None:
        return None
    items = [value] if isinstance(value, str | int | float) else list(value)
    if len(items) != count:
        return None
    try:
        out = tuple(ds_number(float(v), decimals_in(v)) for v in items)
    except (TypeError, ValueError):
        return None
    return out if all(math.isfinite(v) for v in out) else None


def _float(value: Any) -> float | None:
    got = _floats(value, 1)
    return None if got is None else got[0]


def _item(ds: Any, sequence: str) -> Any:
    """First item of ``sequence`` in ``ds``, or ``None``."""
    seq = ds.get(sequence) if ds is not None else None
    return seq[0] if seq else None


def slices_from_dataset(ds: Any) -> list[SliceGeometry]:
    """The slices of one instance header (a :class:`pydicom.Dataset`).

    Single-frame: one slice from the top-level Image Plane Module (PS3.3 C.7.6.2).
    Enhanced multi-frame (Per-frame Functional Groups Sequence (5200,9230) present): one slice
    per frame, IPP from Plane Position Sequence (0020,9113) of the frame, IOP from Plane
    Orientation Sequence (0020,9116), Pixel Spacing, Slice Thickness and Spacing Between
    Slices from Pixel Measures Sequence (0028,9110), per frame or shared (rules 17-19).
    Frames or instances without a parseable IPP and IOP are left out (empty list): they are
    not part of any stack. Values are read leniently (float of each value); checking the
    Decimal String syntax (rulebook section A) is the pipeline's job, not this module's.

    Where the Image Plane attributes sit in a sequence -- an NM image's Detector Information
    Sequence (0054,0022), PS3.3 C.8.4.10 -- the first item gives IPP and IOP of the first
    frame; a reconstructed NM volume (NM Reconstruction Module, PS3.3 C.8.4.15) has one
    slice per frame, frame k at IPP + k x Spacing Between Slices along the normal, with the
    top-level Slice Thickness and Spacing Between Slices.
    """
    for_uid = str(ds.get("FrameOfReferenceUID", "") or "")
    rows = int(ds.get("Rows", 0) or 0)
    columns = int(ds.get("Columns", 0) or 0)
    modality = str(ds.get("Modality", "") or "")
    sop = str(ds.get("SOPInstanceUID", "") or "")
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if not per_frame:
        if "ImagePositionPatient" in ds or "ImageOrientationPatient" in ds:
            return _plane_slices(ds, ds, for_uid, rows, columns, modality, sop, stacked=False)
        detector = _item(ds, "DetectorInformationSequence")
        if detector is None:
            return []
        return _plane_slices(ds, detector, for_uid, rows, columns, modality, sop, stacked=True)
    shared = _item(ds, "SharedFunctionalGroupsSequence")

    def group(frame: Any, sequence: str) -> Any:
        found = _item(frame, sequence)
        return found if found is not None else _item(shared, sequence)

    slices: list[SliceGeometry] = []
    for index, frame in enumerate(per_frame, start=1):
        position = group(frame, "PlanePositionSequence")
        orientation = group(frame, "PlaneOrientationSequence")
        measures = group(frame, "PixelMeasuresSequence")
        if position is None or orientation is None:
            continue
        iop = _floats(orientation.get("ImageOrientationPatient"), 6)
        ipp = _floats(position.get("ImagePositionPatient"), 3)
        if iop is None or ipp is None:
            continue
        ps = _floats(measures.get("PixelSpacing"), 2) if measures is not None else None
        st = _float(measures.get("SliceThickness")) if measures is not None else None
        sbs = _float(measures.get("SpacingBetweenSlices")) if measures is not None else None
        slices.append(
            SliceGeometry(
                frame_of_reference_uid=for_uid,
                rows=rows,
                columns=columns,
                iop=iop,
                ipp=ipp,
                pixel_spacing=(ps[0], ps[1]) if ps else None,
                slice_thickness=st,
                spacing_between_slices=sbs,
                modality=modality,
                sop_instance_uid=sop,
                frame_number=index,
            )
        )
    return slices


def _cross(a: tuple[float, ...], b: tuple[float, ...]) -> tuple[float, float, float]:
    return (a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0])


def _along(ipp: tuple[float, ...], normal: tuple[float, ...], mm: float) -> tuple[float, ...]:
    return tuple(p + mm * n for p, n in zip(ipp, normal, strict=True))


def _plane_slices(
    ds: Any,
    plane: Any,
    for_uid: str,
    rows: int,
    columns: int,
    modality: str,
    sop: str,
    *,
    stacked: bool,
) -> list[SliceGeometry]:
    """Slices of an image without functional groups, IPP/IOP read from ``plane``: the data
    set itself (one slice), or its Detector Information Sequence (0054,0022) item (NM,
    PS3.3 C.8.4.10; ``stacked``): one slice per frame of a reconstructed volume
    (C.8.4.15), frame k at IPP + k x Spacing Between Slices along the normal."""
    iop = _floats(plane.get("ImageOrientationPatient"), 6)
    ipp = _floats(plane.get("ImagePositionPatient"), 3)
    if iop is None or ipp is None:
        return []
    sbs = _float(ds.get("SpacingBetweenSlices"))
    frames = 1
    if stacked and sbs:
        try:
            frames = max(1, int(ds.get("NumberOfFrames", 1) or 1))
        except (TypeError, ValueError):
            frames = 1
    normal = _cross(iop[:3], iop[3:])
    ps = _floats(ds.get("PixelSpacing"), 2)
    st = _float(ds.get("SliceThickness"))
    return [
        SliceGeometry(
            frame_of_reference_uid=for_uid,
            rows=rows,
            columns=columns,
            iop=iop,
            ipp=ipp
            if k == 0
            else tuple(p + k * (sbs or 0.0) * n for p, n in zip(ipp, normal, strict=True)),
            pixel_spacing=(ps[0], ps[1]) if ps else None,
            slice_thickness=st,
            spacing_between_slices=sbs,
            modality=modality,
            sop_instance_uid=sop,
            frame_number=k + 1 if frames > 1 else None,
        )
        for k in range(frames)
    ]
