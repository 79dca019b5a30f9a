"""Builds real Part 10 files for tests (pydicom writes them, nothing is mocked)."""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.tag import BaseTag
from pydicom.uid import UID, CTImageStorage, ExplicitVRLittleEndian, generate_uid

ROOT = "1.2.826.0.1.3680043.8.498.77"


def new_uid() -> str:
    return str(generate_uid(prefix=ROOT + "."))


def ct_dataset(
    *,
    study: str | None = None,
    series: str | None = None,
    sop: str | None = None,
    rows: int = 16,
    columns: int = 16,
    pixel_spacing: Any = "0.5\\0.5",
    position: tuple[float, float, float] = (0.0, 0.0, 0.0),
    orientation: tuple[float, ...] = (1, 0, 0, 0, 1, 0),
    instance_number: int = 1,
    modality: str = "CT",
    sop_class: str = CTImageStorage,
    extra: Callable[[Dataset], None] | None = None,
) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop or new_uid()
    ds.StudyInstanceUID = study or new_uid()
    ds.SeriesInstanceUID = series or new_uid()
    ds.FrameOfReferenceUID = ROOT + ".1"
    ds.PatientID = "TEST-1"
    ds.PatientName = "Test^Spacing"
    ds.AccessionNumber = "A123"
    ds.StudyDate = "20261121"
    ds.Modality = modality
    ds.Manufacturer = "ACME"
    ds.ManufacturerModelName = "CT-9000"
    ds.SeriesNumber = 1
    ds.InstanceNumber = instance_number
    ds.ImagePositionPatient = [f"{v:g}" for v in position]
    ds.ImageOrientationPatient = [f"{v:g}" for v in orientation]
    ds.SliceThickness = "1.0"
    ds.Rows = rows
    ds.Columns = columns
    if pixel_spacing is not None:
        ds.add_new(0x00280030, "DS", pixel_spacing)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.PixelData = (np.arange(rows * columns, dtype=np.uint16) % 4096).tobytes()
    if extra is not None:
        extra(ds)
    return ds


def set_raw(ds: Dataset, tag: int, vr: str, value: bytes) -> None:
    """Put an element with exactly these value bytes (even ones invalid for the VR)."""
    if len(value) % 2:
        value += b" "
    ds[tag] = RawDataElement(BaseTag(tag), vr, len(value), value, 0, False, True)  # type: ignore[assignment]


def write(ds: Dataset, path: Path, transfer_syntax: str = ExplicitVRLittleEndian) -> Path:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = UID(transfer_syntax)
    ds.file_meta = meta
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def write_ct(path: Path, **kwargs: Any) -> Path:
    return write(ct_dataset(**kwargs), path)


def write_large_multiframe(
    path: Path, megabytes: int, frame_side: int = 1024, pixel_spacing: str = "0.5\\0.5"
) -> Path:
    """A native multi-frame instance of about ``megabytes`` MB, written without holding it.

    The header is written by pydicom; the Pixel Data (7FE0,0010) element is appended
    by hand, frame by frame (PS3.5 7.1.2, explicit VR little endian, OW).
    """
    frame_bytes = frame_side * frame_side * 2
    frames = max(1, megabytes * 1024 * 1024 // frame_bytes)
    ds = ct_dataset(  # Multi-frame Grayscale Word SC
        rows=frame_side,
        columns=frame_side,
        sop_class="1.2.840.10008.5.1.4.1.1.7.3",
        pixel_spacing=pixel_spacing,
    )
    del ds.PixelData
    ds.NumberOfFrames = frames
    write(ds, path)
    frame = (np.arange(frame_side * frame_side, dtype=np.uint16) % 4096).tobytes()
    with open(path, "ab") as fh:
        fh.write(struct.pack("<HH2sHL", 0x7FE0, 0x0010, b"OW", 0, frame_bytes * frames))
        for _ in range(frames):
            fh.write(frame)
    return path
