"""Series built for the per-series spacing tests (rulebook section G)."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence

from tests.dicom_factory import ct_dataset, new_uid, write

AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
SAGITTAL = (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)
MR = "1.2.840.10008.5.1.4.1.1.4"
ENHANCED_MR = "1.2.840.10008.5.1.4.1.1.4.1"


def _normal(iop: Sequence[float]) -> np.ndarray:
    r, c = np.array(iop[:3]), np.array(iop[3:])
    return np.cross(r, c)


def write_series(
    folder: Path,
    positions_mm: Sequence[float],
    *,
    iop: Sequence[float] = AXIAL,
    stacking: Sequence[float] | None = None,
    modality: str = "CT",
    sop_class: str = "1.2.840.10008.5.1.4.1.1.2",
    pixel_spacing: Sequence[str] | str = "0.7\\0.5",
    sbs: str | None = None,
    seed: int = 1,
    **kwargs: Any,
) -> tuple[str, list[Path]]:
    """One file per position, Instance Numbers shuffled; returns (series UID, files)."""
    study, series = new_uid(), new_uid()
    direction = np.array(stacking) if stacking is not None else _normal(iop)
    numbers = list(range(1, len(positions_mm) + 1))
    random.Random(seed).shuffle(numbers)
    files = []
    for i, z in enumerate(positions_mm):
        ipp = tuple(float(v) for v in (np.array([-100.0, -120.0, 50.0]) + z * direction))
        ps = pixel_spacing[i] if isinstance(pixel_spacing, list | tuple) else pixel_spacing

        def extra(ds: Dataset) -> None:
            if sbs is not None:
                ds.SpacingBetweenSlices = sbs

        ds = ct_dataset(
            study=study,
            series=series,
            position=ipp,
            orientation=tuple(iop),
            instance_number=numbers[i],
            modality=modality,
            sop_class=sop_class,
            pixel_spacing=ps,
            extra=extra,
            **kwargs,
        )
        files.append(write(ds, folder / f"{i:04d}.dcm"))
    order = list(files)
    random.Random(seed + 1).shuffle(order)
    return series, order


def regular(n: int, gap: float = 1.25) -> list[float]:
    return [i * gap for i in range(n)]


def tilted_iop(degrees: float) -> tuple[float, ...]:
    t = math.radians(degrees)
    return (1.0, 0.0, 0.0, 0.0, math.cos(t), -math.sin(t))


def write_enhanced_mr(path: Path, frames: int = 12, gap: float = 1.2) -> tuple[str, Path]:
    """An Enhanced MR Image with Plane Position per frame, Pixel Measures shared."""
    ds = ct_dataset(rows=8, columns=8, modality="MR", sop_class=ENHANCED_MR, pixel_spacing=None)
    for kw in ("ImagePositionPatient", "ImageOrientationPatient", "SliceThickness"):
        del ds[kw]
    ds.NumberOfFrames = frames
    ds.PixelData = np.zeros(frames * 64, dtype=np.uint16).tobytes()
    orientation = Dataset()
    orientation.ImageOrientationPatient = [f"{v:g}" for v in SAGITTAL]
    measures = Dataset()
    measures.PixelSpacing = ["0.9375", "0.9375"]
    measures.SliceThickness = "1.0"
    shared = Dataset()
    shared.PlaneOrientationSequence = DicomSequence([orientation])
    shared.PixelMeasuresSequence = DicomSequence([measures])
    ds.SharedFunctionalGroupsSequence = DicomSequence([shared])
    items = []
    for i in range(frames):
        pos = Dataset()
        pos.ImagePositionPatient = [f"{30.0 - gap * i:.4f}", "-100", "90"]
        item = Dataset()
        item.PlanePositionSequence = DicomSequence([pos])
        items.append(item)
    ds.PerFrameFunctionalGroupsSequence = DicomSequence(items)
    write(ds, path)
    return str(ds.SeriesInstanceUID), path
