"""Finding codes and attribute tags of the per-series geometry (rulebook section G).

Tags are written ``(gggg,eeee)`` as in the messages and the ``tag`` of a
:class:`scp.pipeline.model.Finding`; the codes are the ``code`` of the findings this package
reports (rules 7, 18 and 21-30). Plain constants, no behaviour.
"""

from __future__ import annotations

__all__ = [
    "GEOMETRY_INVALID",
    "SERIES_GEOMETRY_MIXED",
    "SERIES_PIXEL_SPACING_INCONSISTENT",
    "SLICE_DUPLICATE_POSITION",
    "SLICE_MISSING",
    "SLICE_SPACING_NONUNIFORM",
    "SLICE_THICKNESS_DIFFERS",
    "SLICE_TILT",
    "SPACING_BETWEEN_SLICES_MISMATCH",
    "SPACING_BETWEEN_SLICES_NEGATIVE",
    "TAG_FOR",
    "TAG_IOP",
    "TAG_IPP",
    "TAG_PS",
    "TAG_SBS",
    "TAG_ST",
]

#: Image Position (Patient), PS3.3 C.7.6.2.
TAG_IPP = "(0020,0032)"
#: Image Orientation (Patient), PS3.3 C.7.6.2.
TAG_IOP = "(0020,0037)"
#: Spacing Between Slices, PS3.3 C.8.3.1 (MR Image) and C.7.6.16.2.1 (Pixel Measures).
TAG_SBS = "(0018,0088)"
#: Slice Thickness, PS3.3 C.7.6.2.
TAG_ST = "(0018,0050)"
#: Pixel Spacing, PS3.3 C.7.6.2.
TAG_PS = "(0028,0030)"
#: Frame of Reference UID, PS3.3 C.7.4.1.
TAG_FOR = "(0020,0052)"

# Finding codes of section G.
GEOMETRY_INVALID = "GEOMETRY_INVALID"
SLICE_DUPLICATE_POSITION = "SLICE_DUPLICATE_POSITION"
SLICE_MISSING = "SLICE_MISSING"
SLICE_SPACING_NONUNIFORM = "SLICE_SPACING_NONUNIFORM"
SLICE_TILT = "SLICE_TILT"
SPACING_BETWEEN_SLICES_NEGATIVE = "SPACING_BETWEEN_SLICES_NEGATIVE"
SPACING_BETWEEN_SLICES_MISMATCH = "SPACING_BETWEEN_SLICES_MISMATCH"
SLICE_THICKNESS_DIFFERS = "SLICE_THICKNESS_DIFFERS"
SERIES_GEOMETRY_MIXED = "SERIES_GEOMETRY_MIXED"
SERIES_PIXEL_SPACING_INCONSISTENT = "SERIES_PIXEL_SPACING_INCONSISTENT"
