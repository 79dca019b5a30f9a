"""Sequence of Ultrasound Regions (0018,6011): one :class:`UltrasoundRegion` per item.

US Region Calibration Module, PS3.3 C.8.5.5: Region Spatial Format
(0018,6012), Region Data Type (0018,6014), Physical Units X/Y Direction
(0018,6024)/(0018,6026) (C.8.5.5.1.15), Physical Delta X/Y (0018,602C)/
(0018,602E) and the region location (0018,6018)-(0018,601E).  Rulebook
section D, rules 15-16: a region is spatial only when both units are cm.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydicom.dataset import Dataset

from .raw import first_int, first_number

__all__ = ["UltrasoundRegion", "read_region"]


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


def read_region(index: int, item: Dataset) -> UltrasoundRegion:
    """Item ``index`` of Sequence of Ultrasound Regions (0018,6011); unreadable values ``None``."""
    return UltrasoundRegion(
        index=index,
        spatial_format=first_int(item, "RegionSpatialFormat"),
        data_type=first_int(item, "RegionDataType"),
        units_x=first_int(item, "PhysicalUnitsXDirection"),
        units_y=first_int(item, "PhysicalUnitsYDirection"),
        delta_x=first_number(item, "PhysicalDeltaX", "FD"),
        delta_y=first_number(item, "PhysicalDeltaY", "FD"),
        min_x0=first_int(item, "RegionLocationMinX0", "UL"),
        min_y0=first_int(item, "RegionLocationMinY0", "UL"),
        max_x1=first_int(item, "RegionLocationMaxX1", "UL"),
        max_y1=first_int(item, "RegionLocationMaxY1", "UL"),
    )
