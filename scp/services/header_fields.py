"""Identification attributes read from a header, the same way for the index and ``check``.

What the index stores for a series (:mod:`scp.services.ingest`) and what ``check`` reports
for the files of a series (:mod:`scp.services.check`) both come from here, so the two
SERIES answers carry the same values.
"""

from __future__ import annotations

from pydicom.dataset import Dataset


def header_text(ds: Dataset, keyword: str, limit: int = 64) -> str | None:
    """A header value as text for the index, padding stripped, at most ``limit``
    characters; ``None`` when absent or empty (lenient: never raises)."""
    try:
        elem = ds.get(keyword)
    except Exception:
        return None
    if elem is None:
        return None
    try:
        value = elem if not hasattr(elem, "value") else elem.value
    except Exception:
        return None
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("latin-1", errors="replace")
    text = str(value).strip("\x00 ")
    return text[:limit] if text else None


def series_fields(ds: Dataset) -> dict[str, str | None]:
    """The General Series and General Equipment attributes (PS3.3 C.7.3.1, C.7.5.1) the
    index keeps per series, cut to the lengths of their VRs (CS 16, SH 16, IS 12, LO 64)."""
    return {
        "modality": header_text(ds, "Modality", 16),
        "manufacturer": header_text(ds, "Manufacturer"),
        "manufacturer_model_name": header_text(ds, "ManufacturerModelName"),
        "station_name": header_text(ds, "StationName", 16),
        "series_number": header_text(ds, "SeriesNumber", 12),
        "series_description": header_text(ds, "SeriesDescription"),
    }
