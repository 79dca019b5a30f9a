"""An indexed instance's files for the web page (issue 19): where they are, their
spacing-related attributes, the Original Attributes Sequence, the middle image.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from sqlalchemy import select
from sqlalchemy.orm import Session

from scp.services import render
from storage import dashboard
from storage.filestore import FileStore
from storage.models import Instance, Series
from storage.queries import NotFound

#: Spacing-related attributes shown as received and as stored (PS3.3 C.7.6.2, C.7.6.3,
#: C.8.2.1, 10.7.1.3; PS3.3 C.7.6.16.2.1 for the Pixel Measures items).
SPACING_KEYWORDS = (
    "PixelSpacing",
    "ImagerPixelSpacing",
    "NominalScannedPixelSpacing",
    "PixelSpacingCalibrationType",
    "EstimatedRadiographicMagnificationFactor",
    "SliceThickness",
    "SpacingBetweenSlices",
    "ImagePositionPatient",
    "ImageOrientationPatient",
    "ReconstructionDiameter",
    "Rows",
    "Columns",
)


@dataclass(frozen=True)
class InstanceFiles:
    """The stored file and, when the node edited the instance, the original as received."""

    sop_instance_uid: str
    stored: Path
    original: Path | None
    row_mm: float | None
    column_mm: float | None
    received_pixel_spacing: str | None


def instance_files(session: Session, store: FileStore, sop_instance_uid: str) -> InstanceFiles:
    """The files of an indexed instance; :class:`NotFound` when not indexed."""
    inst = session.scalar(select(Instance).where(Instance.sop_instance_uid == sop_instance_uid))
    if inst is None:
        raise NotFound(f"no instance {sop_instance_uid}")
    return _files(store, inst)


def _files(store: FileStore, inst: Instance) -> InstanceFiles:
    return InstanceFiles(
        sop_instance_uid=inst.sop_instance_uid,
        stored=store.path(inst.path),
        original=store.original_path(inst.original_path) if inst.original_path else None,
        row_mm=inst.pixel_spacing_row_mm,
        column_mm=inst.pixel_spacing_column_mm,
        received_pixel_spacing=inst.received_pixel_spacing,
    )


def _value(ds: Dataset, keyword: str) -> str | None:
    if not keyword or keyword not in ds:
        return None
    value = ds[keyword].value
    if isinstance(value, MultiValue | list | tuple):
        return "\\".join(str(v) for v in value)
    return None if value is None else str(value)


def spacing_attributes(path: Path | None) -> dict[str, str | None]:
    """The :data:`SPACING_KEYWORDS` of the file's header (``{}`` for no file or one that
    cannot be read); Pixel Spacing of the first shared Pixel Measures item as
    ``PixelMeasuresSequence/PixelSpacing``."""
    if path is None:
        return {}
    try:
        ds = dcmread(path, stop_before_pixels=True)
    except (OSError, ValueError):
        return {}
    out = {k: _value(ds, k) for k in SPACING_KEYWORDS}
    try:
        measures = ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
        out["PixelMeasuresSequence/PixelSpacing"] = _value(measures, "PixelSpacing")
    except (AttributeError, IndexError, KeyError):
        pass
    return out


def original_attributes(path: Path) -> list[dict[str, Any]]:
    """The items of Original Attributes Sequence (0400,0561) of a stored file, oldest
    first: ``when`` (Attribute Modification DateTime (0400,0562)), ``system`` (Modifying
    System (0400,0563)), ``reason`` (Reason for the Attribute Modification (0400,0565))
    and ``before`` (keyword -> the value in Modified Attributes Sequence (0400,0550))."""
    try:
        ds = dcmread(path, stop_before_pixels=True)
    except (OSError, ValueError):
        return []
    items = []
    for item in ds.get("OriginalAttributesSequence", []):
        before: dict[str, str | None] = {}
        for modified in item.get("ModifiedAttributesSequence", []):
            for elem in modified:
                before[elem.keyword or str(elem.tag)] = _value(modified, elem.keyword)
        items.append(
            {
                "when": _value(item, "AttributeModificationDateTime"),
                "system": _value(item, "ModifyingSystem"),
                "reason": _value(item, "ReasonForTheAttributeModification"),
                "before": before,
            }
        )
    return items


def received_spacing(raw: str | None) -> tuple[float | None, float | None]:
    """Row and column spacing, mm, of Pixel Spacing text as received (``None`` when it
    does not read as two numbers)."""
    try:
        row, column = (float(v.replace(",", ".")) for v in (raw or "").split("\\"))
    except ValueError:
        return None, None
    return row, column


def middle_instance(session: Session, store: FileStore, series_instance_uid: str) -> InstanceFiles:
    """The instance in the middle of the series' largest stack (by position along the
    normal; by reception order without positions). :class:`NotFound` for an unknown or
    empty series."""
    series_id = session.scalar(
        select(Series.id).where(Series.series_instance_uid == series_instance_uid)
    )
    if series_id is None:
        raise NotFound(f"no series {series_instance_uid}")
    stacks = dashboard.stack_positions(session, series_id)
    if stacks:
        slices = max(stacks.values(), key=len)
        instance_id = slices[len(slices) // 2][1]
        inst = session.get(Instance, instance_id)
    else:
        ids = list(
            session.scalars(
                select(Instance.id).where(Instance.series_id == series_id).order_by(Instance.id)
            )
        )
        inst = session.get(Instance, ids[len(ids) // 2]) if ids else None
    if inst is None:
        raise NotFound(f"series {series_instance_uid} has no instances")
    return _files(store, inst)


def series_image(
    session: Session, store: FileStore, series_instance_uid: str, spacing: str
) -> bytes:
    """The middle image of a series as PNG with the 10 mm bars of ``spacing``:
    ``effective`` (what the node judged and stored) or ``received`` (Pixel Spacing as it
    arrived). :class:`NotFound`; :class:`scp.services.render.NotRenderable`."""
    files = middle_instance(session, store, series_instance_uid)
    if spacing == "received":
        row, column = received_spacing(files.received_pixel_spacing)
    else:
        row, column = files.row_mm, files.column_mm
    return render.render_png(files.stored, row, column)
