"""Shared (5200,9229) and Per-frame (5200,9230) Functional Groups items.

Multi-frame Functional Groups Module, PS3.3 C.7.6.16: per item, the Pixel
Measures Sequence (0028,9110) (C.7.6.16.2.1: Pixel Spacing, Slice Thickness,
Spacing Between Slices), Plane Position Sequence (0020,9113) (C.7.6.16.2.3:
Image Position (Patient)) and Plane Orientation Sequence (0020,9116)
(C.7.6.16.2.4: Image Orientation (Patient)).  Rulebook section E, rules
17-19, reads them.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydicom.dataset import Dataset

from .model import ElementPath
from .raw import DSAttr, ds_attr, sequence_items

__all__ = ["FunctionalGroup", "PixelMeasures", "functional_groups"]


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
    pm_items = sequence_items(item, "PixelMeasuresSequence")
    if pm_items is None:
        return None
    path = (*prefix, "PixelMeasuresSequence")
    spacings = tuple(ds_attr(pm, "PixelSpacing", (*path, i)) for i, pm in enumerate(pm_items))
    first = pm_items[0] if pm_items else None
    return PixelMeasures(
        path=path,
        pixel_spacing=spacings,
        slice_thickness=ds_attr(first, "SliceThickness", (*path, 0)) if first is not None else None,
        spacing_between_slices=(
            ds_attr(first, "SpacingBetweenSlices", (*path, 0)) if first is not None else None
        ),
    )


def _nested(item: Dataset, sequence: str, keyword: str, prefix: ElementPath) -> DSAttr | None:
    inner = sequence_items(item, sequence)
    if not inner:
        return None
    return ds_attr(inner[0], keyword, (*prefix, sequence, 0))


def functional_groups(ds: Dataset, keyword: str) -> tuple[FunctionalGroup, ...]:
    """Every item of the functional groups sequence ``keyword``; ``()`` when absent."""
    items = sequence_items(ds, keyword)
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
