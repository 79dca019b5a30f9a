"""Gather every spacing source of a header into one typed :class:`SpacingReport`.

Values are read as received (:mod:`scp.pipeline.raw`): nothing here raises on
a malformed header, the dataset is never modified or copied and the pixel
data is never touched.  Ultrasound regions are read by
:mod:`scp.pipeline.regions`, functional groups by :mod:`scp.pipeline.groups`;
this module reads the top-level attributes and assembles the report.

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

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from pydicom.dataset import Dataset

from .groups import FunctionalGroup, PixelMeasures, functional_groups
from .model import Edit, ElementPath
from .raw import DSAttr, ds_attr, first_int, int_text, raw_text, sequence_items, written_vr
from .regions import UltrasoundRegion, read_region

__all__ = ["SpacingReport", "gather"]


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
    pixel_aspect_ratio_vr: str | None = None  # its VR as written (explicit VR), rule 33
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
    return None if new is None else replace(attr, raw=new, vr=None)


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
    regions_items = sequence_items(ds, "SequenceOfUltrasoundRegions")
    return SpacingReport(
        modality=header["Modality"] or None,
        sop_class_uid=header["SOPClassUID"] or None,
        manufacturer=header["Manufacturer"] or None,
        manufacturer_model_name=header["ManufacturerModelName"] or None,
        station_name=header["StationName"] or None,
        device_serial_number=header["DeviceSerialNumber"] or None,
        rows=first_int(ds, "Rows"),
        columns=first_int(ds, "Columns"),
        number_of_frames=int_text(ds, "NumberOfFrames"),
        pixel_spacing=ds_attr(ds, "PixelSpacing"),
        imager_pixel_spacing=ds_attr(ds, "ImagerPixelSpacing"),
        nominal_scanned_pixel_spacing=ds_attr(ds, "NominalScannedPixelSpacing"),
        calibration_type=_clean(raw_text(ds, "PixelSpacingCalibrationType")),
        calibration_description=_clean(raw_text(ds, "PixelSpacingCalibrationDescription")),
        ermf=ds_attr(ds, "EstimatedRadiographicMagnificationFactor"),
        distance_source_to_detector=ds_attr(ds, "DistanceSourceToDetector"),
        distance_source_to_patient=ds_attr(ds, "DistanceSourceToPatient"),
        pixel_aspect_ratio=_clean(raw_text(ds, "PixelAspectRatio")),
        pixel_aspect_ratio_vr=written_vr(ds, 0x00280034),
        ultrasound_regions=(
            None
            if regions_items is None
            else tuple(read_region(i, item) for i, item in enumerate(regions_items))
        ),
        shared_groups=functional_groups(ds, "SharedFunctionalGroupsSequence"),
        per_frame_groups=functional_groups(ds, "PerFrameFunctionalGroupsSequence"),
        image_position=ds_attr(ds, "ImagePositionPatient"),
        image_orientation=ds_attr(ds, "ImageOrientationPatient"),
        slice_thickness=ds_attr(ds, "SliceThickness"),
        spacing_between_slices=ds_attr(ds, "SpacingBetweenSlices"),
        reconstruction_diameter=ds_attr(ds, "ReconstructionDiameter"),
        header=header,
    )
