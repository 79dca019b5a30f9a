"""Names, tags and text limits the pipeline uses when it cites an attribute.

:func:`tag_text` and :func:`attribute_label` turn a DICOM keyword into the
``(gggg,eeee)`` tag and the ``Name (gggg,eeee)`` label used in every finding
message (names as in PS3.6 Table 6-1); :func:`clip` keeps a hostile value
(a DS may be sent 64 KiB long) out of the messages.  Tags are resolved from
the pydicom data dictionary once and cached.
"""

from __future__ import annotations

from functools import lru_cache

from pydicom.datadict import tag_for_keyword

__all__ = ["attribute_label", "clip", "keyword_tag", "tag_text"]

# Tags used on every call, resolved once.
_TAG: dict[str, int] = {}


def keyword_tag(keyword: str) -> int:
    """``"PixelSpacing"`` -> ``0x00280030``; :class:`KeyError` for an unknown keyword."""
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
    tag = keyword_tag(keyword)
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


@lru_cache(maxsize=128)
def attribute_label(keyword: str) -> str:
    """``"PixelSpacing"`` -> ``"Pixel Spacing (0028,0030)"`` for messages."""
    return f"{_NAMES.get(keyword, keyword)} {tag_text(keyword)}"


def clip(text: str, limit: int = 64) -> str:
    """``text`` shortened for a message (a hostile header may send 64 KiB)."""
    return text if len(text) <= limit else f"{text[: limit - 3]}..."
