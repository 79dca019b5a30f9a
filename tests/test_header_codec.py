"""Rewriting a stored file: edited header + the received bytes from the pixel data on.

Each test builds or takes a real Part 10 file, reads its header the way the
node does (``dcmread(fp, force=True, stop_before_pixels=True)``), applies
edits and the annotation, encodes the header with ``encode_header`` and
assembles preamble + File Meta Information + header + the original bytes from
the pixel data tag onward (found with ``fp.tell()`` right after the read).
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
from datetime import UTC, datetime
from io import BytesIO
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom import config, dcmread
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.filewriter import write_file_meta_info
from pydicom.sequence import Sequence
from pydicom.uid import (
    UID,
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    EnhancedMRImageStorage,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    generate_uid,
)

from scp.pipeline.annotate import annotate, read_annotation
from scp.pipeline.model import Edit, EffectiveSpacing, Finding, PipelineResult, Severity
from scp.pipeline.record import apply_edits
from storage.header_codec import (
    EncodingMismatch,
    UnsupportedRewrite,
    encode_header,
    header_view,
    received_encoding,
    transfer_syntax_encoding,
)

TEST_FILES = Path(os.path.dirname(pydicom.data.__file__)) / "test_files"
NOW = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
AE = "SPACING_SCP"
PS = 0x00280030


# --------------------------------------------------------------------------- helpers


def pydicom_file(name: str) -> Path:
    path = TEST_FILES / name
    if not path.exists():
        pytest.skip(f"pydicom test file {name} not installed")
    return path


def _file_meta(ds: Dataset, ts: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = UID(ts)
    return meta


def _patient_study(ds: Dataset) -> None:
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPInstanceUID = generate_uid()
    ds.StudyDate = ds.ContentDate = "20240101"
    ds.StudyTime = ds.ContentTime = "120000"
    ds.AccessionNumber = ""
    ds.Manufacturer = "ACME"
    ds.ReferringPhysicianName = ""
    ds.PatientName = "TEST^PATIENT"
    ds.PatientID = "ID1"
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.StudyID = "1"
    ds.SeriesNumber = "1"
    ds.InstanceNumber = "1"
    ds.FrameOfReferenceUID = generate_uid()
    ds.PositionReferenceIndicator = ""


def make_ct(
    path: Path, ts: str = ExplicitVRLittleEndian, ps: str = "0.7\\0.5", with_oas: bool = False
) -> Path:
    """A small CT (16x16, MONOCHROME2, 16 bit) with Reconstruction Diameter."""
    ds = Dataset()
    _patient_study(ds)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SOPClassUID = CTImageStorage
    ds.Modality = "CT"
    ds.ImagePositionPatient = [0, 0, 0]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.SliceThickness = "1.0"
    ds.KVP = "120"
    ds.AcquisitionNumber = "1"
    ds.ReconstructionDiameter = "11.2"  # / 16 columns = 0.7 = PS[0] (rule 7)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = 16
    ds.Columns = 16
    ds.add_new(PS, "DS", "0.7\\0.5")  # replaced by ``ps`` in the file's bytes below
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.RescaleIntercept = "-1024"
    ds.RescaleSlope = "1"
    ds.RescaleType = "HU"
    if with_oas:
        ds.OriginalAttributesSequence = Sequence([earlier_oas_item()])
    ds.PixelData = (np.arange(256, dtype=np.uint16) * 13 % 4096).tobytes()
    ds.file_meta = _file_meta(ds, ts)
    ds.save_as(path, enforce_file_format=True)
    return _set_pixel_spacing_bytes(path, ps)


def _set_pixel_spacing_bytes(path: Path, ps: str) -> Path:
    """Write ``ps`` as received bytes (pydicom refuses to encode e.g. ``0,7``)."""
    value = ps.encode("latin-1")
    value += b" " * (len(value) % 2)
    if value != b"0.7\\0.5 ":
        data = path.read_bytes()
        assert len(value) == 8 and data.count(b"0.7\\0.5 ") == 1
        path.write_bytes(data.replace(b"0.7\\0.5 ", value))
    return path


def earlier_oas_item() -> Dataset:
    """An Original Attributes Sequence item left by some earlier system."""
    modified = Dataset()
    modified.PatientID = "OLD-ID"
    item = Dataset()
    item.AttributeModificationDateTime = "20230101000000"
    item.ModifyingSystem = "OTHER_PACS"
    item.SourceOfPreviousValues = "SITE A"
    item.ReasonForTheAttributeModification = "COERCE"
    item.ModifiedAttributesSequence = Sequence([modified])
    return item


def make_enhanced_mr(path: Path, ps: str = "0.7\\0.5") -> Path:
    """A two-frame Enhanced MR with Pixel Measures in the shared functional groups."""
    ds = Dataset()
    _patient_study(ds)
    ds.SOPClassUID = EnhancedMRImageStorage
    ds.Modality = "MR"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "NONE"]
    ds.AcquisitionDateTime = "20240101120000"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.NumberOfFrames = 2
    ds.Rows = 16
    ds.Columns = 16
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    measures = Dataset()
    measures.add_new(PS, "DS", ps)
    measures.SliceThickness = "2"
    orientation = Dataset()
    orientation.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    shared = Dataset()
    shared.PixelMeasuresSequence = Sequence([measures])
    shared.PlaneOrientationSequence = Sequence([orientation])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    frames = []
    for z in range(2):
        position = Dataset()
        position.ImagePositionPatient = [0, 0, 2 * z]
        content = Dataset()
        content.FrameAcquisitionDateTime = "20240101120000"
        content.StackID = "1"
        content.InStackPositionNumber = z + 1
        frame = Dataset()
        frame.PlanePositionSequence = Sequence([position])
        frame.FrameContentSequence = Sequence([content])
        frames.append(frame)
    ds.PerFrameFunctionalGroupsSequence = Sequence(frames)
    ds.PixelData = (np.arange(512, dtype=np.uint16) * 7).tobytes()
    ds.file_meta = _file_meta(ds, ExplicitVRLittleEndian)
    ds.save_as(path, enforce_file_format=True)
    return path


def read_header(path: Path) -> tuple[FileDataset, int]:
    """The header as the node reads it, and the offset of the pixel data tag."""
    with open(path, "rb") as fp:
        ds = dcmread(fp, force=True, stop_before_pixels=True)
        return ds, fp.tell()


def dataset_offset(path: Path) -> int:
    """Offset just after the File Meta Information (its group length is present)."""
    data = path.read_bytes()
    assert data[128:132] == b"DICM" and data[132:136] == b"\x02\x00\x00\x00"
    (group_length,) = struct.unpack("<L", data[140:144])
    return 144 + group_length


def rewrite(src: Path, dst: Path, ds: FileDataset, pixel_offset: int) -> bytes:
    """Preamble + meta + encoded header + the received bytes from the pixel data on."""
    header = encode_header(ds, ds.file_meta.TransferSyntaxUID)
    out = DicomBytesIO()
    out.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(out, ds.file_meta, enforce_standard=True)
    with open(src, "rb") as fp:
        fp.seek(pixel_offset)
        tail = fp.read()
    dst.write_bytes(out.getvalue() + header + tail)
    return header


def swap_edit(old: str = "0.7\\0.5", new: str = "0.5\\0.7") -> Edit:
    return Edit("PS_SWAPPED", "CORRECT", ("PixelSpacing",), old, new)


def result_for(edits: list[Edit], row: float = 0.5, column: float = 0.7) -> PipelineResult:
    finding = Finding(
        "PS_SWAPPED",
        Severity.CORRECTED,
        "Pixel Spacing (0028,0030) written reversed (rule 7)",
        rule="7",
        tag="(0028,0030)",
    )
    return PipelineResult(
        findings=[finding],
        edits=edits,
        effective=EffectiveSpacing(row, column, "PixelSpacing"),
    )


def process(src: Path, dst: Path, edits: list[Edit]) -> FileDataset:
    """What the node does to a received file: edit, record, annotate, rewrite."""
    ds, offset = read_header(src)
    apply_edits(ds, edits, AE, NOW)
    annotate(ds, result_for(edits), now=NOW)
    rewrite(src, dst, ds, offset)
    return dcmread(dst)


def raw_elements(data: bytes, implicit: bool, little: bool) -> dict[int, bytes]:
    ds = read_dataset(BytesIO(data), implicit, little)
    return {int(e.tag): bytes(e.value or b"") for e in ds.elements()}


def dciodvfy_errors(path: Path) -> set[str]:
    proc = subprocess.run(
        ["dciodvfy", str(path)], capture_output=True, text=True, timeout=120, check=False
    )
    lines = (proc.stdout + proc.stderr).splitlines()
    return {line.strip() for line in lines if line.startswith("Error")}


def require_dciodvfy() -> None:
    if shutil.which("dciodvfy"):
        return
    if os.environ.get("SPACING_SCP_REQUIRE_DCMTK") == "1":
        pytest.fail("dciodvfy is required (SPACING_SCP_REQUIRE_DCMTK=1) but not installed")
    pytest.skip("dciodvfy (dicom3tools) not installed")


# --------------------------------------------------------------- where the pixels start


@pytest.mark.parametrize(
    ("name", "tag_bytes"),
    [
        ("CT_small.dcm", b"\xe0\x7f\x10\x00"),  # explicit VR little endian
        ("MR_small_implicit.dcm", b"\xe0\x7f\x10\x00"),
        ("MR_small_bigendian.dcm", b"\x7f\xe0\x00\x10"),
        ("JPEG-lossy.dcm", b"\xe0\x7f\x10\x00"),  # encapsulated
        ("examples_overlay.dcm", b"\xe0\x7f\x10\x00"),  # overlay data (60xx,3000) first
    ],
)
def test_stop_before_pixels_leaves_file_at_pixel_data_tag(name: str, tag_bytes: bytes) -> None:
    path = pydicom_file(name)
    ds, offset = read_header(path)
    data = path.read_bytes()
    assert data[offset : offset + 4] == tag_bytes
    assert "PixelData" not in ds
    full = dcmread(path)
    element = full.get_item(0x7FE00010)
    assert isinstance(element, RawDataElement)
    # the full read's value starts 8 (implicit) or 12 (explicit OB/OW) bytes after the tag
    assert element.value_tell - offset in (8, 12)


def test_stop_before_pixels_without_pixel_data_reads_to_the_end(tmp_path: Path) -> None:
    path = pydicom_file("rtplan.dcm")
    _, offset = read_header(path)
    assert offset == path.stat().st_size


# ---------------------------------------------------------------- byte preservation


@pytest.mark.parametrize(
    "name",
    [
        "CT_small.dcm",
        "MR_small_implicit.dcm",
        "MR_small_bigendian.dcm",
        "JPEG-lossy.dcm",
        "SC_rgb_small_odd_big_endian.dcm",
        "rtdose.dcm",
    ],
)
def test_untouched_header_is_written_byte_for_byte(name: str) -> None:
    path = pydicom_file(name)
    ds, offset = read_header(path)
    original = path.read_bytes()[dataset_offset(path) : offset]
    assert encode_header(ds, ds.file_meta.TransferSyntaxUID) == original


def test_implicit_vr_elements_keep_their_bytes_after_an_edit(tmp_path: Path) -> None:
    """Implicit VR: the VR of raw elements is never looked up, their bytes never change."""
    src = make_ct(tmp_path / "ct_implicit.dcm", ts=ImplicitVRLittleEndian)
    ds, offset = read_header(src)
    before = raw_elements(src.read_bytes()[dataset_offset(src) : offset], True, True)
    _ = ds.Rows, ds.ImageType, ds.ReconstructionDiameter  # the pipeline decodes some
    apply_edits(ds, [swap_edit()], AE, NOW)
    after = raw_elements(encode_header(ds, ImplicitVRLittleEndian), True, True)
    changed = {tag for tag in before if after.get(tag) != before[tag]}
    assert changed == {PS}
    assert after[PS] == b"0.5\\0.7 "
    added = set(after) - set(before)
    assert added == {0x00080015, 0x04000561}


def test_decoding_from_a_slice_view_keeps_the_header_raw() -> None:
    """The recommended pattern: decode from ``header[0x00030000:]``, edit the header."""
    path = pydicom_file("SC_rgb_gdcm_KY.dcm")  # multi-valued CS with inner padding
    ds, offset = read_header(path)
    view = ds[0x00030000:]
    assert view.ImageType[0].strip() == "DERIVED"
    original = path.read_bytes()[dataset_offset(path) : offset]
    assert encode_header(ds, ds.file_meta.TransferSyntaxUID) == original
    # decoding in the header itself re-encodes that element (inner padding dropped)
    assert ds.ImageType[0].strip() == "DERIVED"
    assert encode_header(ds, ds.file_meta.TransferSyntaxUID) != original


def test_invalid_values_are_written_as_received_under_strict_reading(tmp_path: Path) -> None:
    src = make_ct(tmp_path / "ct.dcm", ps="0,7\\0,5")
    ds, offset = read_header(src)
    original = src.read_bytes()[dataset_offset(src) : offset]
    with config.strict_reading():
        assert encode_header(ds, ExplicitVRLittleEndian) == original
        # changing the encoding decodes every element: refused cleanly, not a crash
        with pytest.raises(UnsupportedRewrite):
            encode_header(ds, ImplicitVRLittleEndian)
    assert config.settings.reading_validation_mode != config.RAISE


def test_group_lengths_are_dropped(tmp_path: Path) -> None:
    for name in ("ExplVR_BigEnd.dcm", "693_J2KI.dcm"):
        src = pydicom_file(name)
        ds, offset = read_header(src)
        assert any(t.element == 0 for t in ds.keys())  # noqa: SIM118
        assert all(t.element != 0 for t in header_view(ds).keys())  # noqa: SIM118
        dst = tmp_path / name
        rewrite(src, dst, ds, offset)
        back = dcmread(dst)
        assert all(t.element != 0 or t.group == 2 for t in back.keys())  # noqa: SIM118
        assert back.PixelData == dcmread(src).PixelData


def test_header_view_stops_at_pixel_data_of_a_full_read() -> None:
    path = pydicom_file("CT_small.dcm")
    full = dcmread(path)
    ds, _ = read_header(path)
    assert encode_header(full, full.file_meta.TransferSyntaxUID) == encode_header(
        ds, ds.file_meta.TransferSyntaxUID
    )


# ------------------------------------------------------------------ transfer syntaxes


def test_deflated_header_is_encoded_inflated() -> None:
    # Deflated Explicit VR Little Endian is explicit VR little endian once inflated (PS3.5
    # A.5); storage.part10.write_part10 deflates the header with the rest (test_spacing_truth)
    path = pydicom_file("image_dfl.dcm")
    ds, _ = read_header(path)
    assert encode_header(ds, ds.file_meta.TransferSyntaxUID)[4:6] == b"UI"  # explicit VR
    assert transfer_syntax_encoding(DeflatedExplicitVRLittleEndian) == (False, True)


def test_transfer_syntax_encodings() -> None:
    assert transfer_syntax_encoding(ImplicitVRLittleEndian) == (True, True)
    assert transfer_syntax_encoding(ExplicitVRLittleEndian) == (False, True)
    assert transfer_syntax_encoding(ExplicitVRBigEndian) == (False, False)
    assert transfer_syntax_encoding("1.2.840.10008.1.2.4.50\x00") == (False, True)
    # a standard transfer syntax newer than pydicom is encapsulated (PS3.5 A.4)
    assert transfer_syntax_encoding("1.2.840.10008.1.2.4.999") == (False, True)
    with pytest.raises(UnsupportedRewrite, match="unknown"):
        transfer_syntax_encoding("1.3.6.1.4.1.9999.1")


def test_implicit_data_set_under_explicit_transfer_syntax_is_refused() -> None:
    path = pydicom_file("SC_rgb_jpeg.dcm")  # JPEG Baseline, but the data set is implicit VR
    with pytest.warns(UserWarning, match="implicit VR"):
        ds, _ = read_header(path)
    assert received_encoding(ds) == (True, True)
    with pytest.raises(EncodingMismatch) as info:
        encode_header(ds, ds.file_meta.TransferSyntaxUID)
    assert info.value.actual == (True, True)


# ------------------------------------------------------------------- full rewrites


@pytest.mark.parametrize(
    "ts", [ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian]
)
def test_ct_rewrite_in_each_native_transfer_syntax(tmp_path: Path, ts: str) -> None:
    src = make_ct(tmp_path / "ct.dcm", ts=ts)
    original = dcmread(src)
    back = process(src, tmp_path / "out.dcm", [swap_edit()])

    assert back.file_meta.TransferSyntaxUID == ts
    assert np.array_equal(back.pixel_array, original.pixel_array)
    assert back.PixelSpacing == [0.5, 0.7]
    assert back.SOPInstanceUID == original.SOPInstanceUID
    assert back.InstanceCoercionDateTime == "20240506070809.123456+0000"
    (item,) = back.OriginalAttributesSequence
    assert item.ReasonForTheAttributeModification == "CORRECT"
    assert item.ModifyingSystem == AE
    assert item.AttributeModificationDateTime == "20240506070809.123456+0000"
    assert item.SourceOfPreviousValues in ("", None)
    (previous,) = item.ModifiedAttributesSequence
    assert previous.get_item(PS).value in (b"0.7\\0.5 ", [0.7, 0.5])
    assert [str(v) for v in previous.PixelSpacing] == ["0.7", "0.5"]
    notes = read_annotation(back)
    assert notes[0x10] == "corrected"
    assert notes[0x12] == "0.5"


def test_big_endian_test_file_rewrite(tmp_path: Path) -> None:
    src = pydicom_file("MR_small_bigendian.dcm")
    original = dcmread(src)
    edit = Edit("PS_TEST", "COERCE", ("PixelSpacing",), "0.3125\\0.3125", "0.3125\\0.3126")
    back = process(src, tmp_path / "out.dcm", [edit])
    assert back.file_meta.TransferSyntaxUID == ExplicitVRBigEndian
    assert np.array_equal(back.pixel_array, original.pixel_array)
    assert [str(v) for v in back.PixelSpacing] == ["0.3125", "0.3126"]
    assert back.OriginalAttributesSequence[0].ReasonForTheAttributeModification == "COERCE"
    assert back.PixelData == original.PixelData


def test_encapsulated_jpeg_pixel_data_is_copied_unchanged(tmp_path: Path) -> None:
    src = pydicom_file("JPEG-lossy.dcm")
    original = dcmread(src)
    edit = Edit("PS_TEST", "CORRECT", ("PixelSpacing",), "2.260000\\2.260000", "2.26\\2.26")
    back = process(src, tmp_path / "out.dcm", [edit])
    assert back.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID
    assert back.PixelData == original.PixelData
    assert back.get_item(0x7FE00010).is_undefined_length
    assert [str(v) for v in back.PixelSpacing] == ["2.26", "2.26"]
    (previous,) = back.OriginalAttributesSequence[0].ModifiedAttributesSequence
    assert [str(v) for v in previous.PixelSpacing] == ["2.260000", "2.260000"]


def test_enhanced_mr_nested_edit_records_the_whole_shared_groups(tmp_path: Path) -> None:
    src = make_enhanced_mr(tmp_path / "emr.dcm")
    original = dcmread(src)
    edit = Edit(
        "PS_SWAPPED",
        "CORRECT",
        ("SharedFunctionalGroupsSequence", 0, "PixelMeasuresSequence", 0, "PixelSpacing"),
        "0.7\\0.5",
        "0.5\\0.7",
    )
    back = process(src, tmp_path / "out.dcm", [edit])
    assert np.array_equal(back.pixel_array, original.pixel_array)
    measures = back.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
    assert measures.PixelSpacing == [0.5, 0.7]
    assert measures.SliceThickness == 2
    (previous,) = back.OriginalAttributesSequence[0].ModifiedAttributesSequence
    assert list(previous.keys()) == [0x52009229]
    old_shared = previous.SharedFunctionalGroupsSequence[0]
    assert old_shared.PixelMeasuresSequence[0].PixelSpacing == [0.7, 0.5]
    assert old_shared.PlaneOrientationSequence[0].ImageOrientationPatient == [1, 0, 0, 0, 1, 0]


def test_existing_original_attributes_item_is_kept(tmp_path: Path) -> None:
    src = make_ct(tmp_path / "ct.dcm", with_oas=True)
    back = process(src, tmp_path / "out.dcm", [swap_edit()])
    first, second = back.OriginalAttributesSequence
    assert first.ModifyingSystem == "OTHER_PACS"
    assert first.ModifiedAttributesSequence[0].PatientID == "OLD-ID"
    assert second.ModifyingSystem == AE


def test_nonconforming_value_survives_the_rewrite_byte_for_byte(tmp_path: Path) -> None:
    src = make_ct(tmp_path / "ct.dcm", ps="0,7\\0,5")
    edit = Edit("PS_COMMA_DECIMAL", "CORRECT", ("PixelSpacing",), "0,7\\0,5", "0.7\\0.5")
    back = process(src, tmp_path / "out.dcm", [edit])
    (item,) = back.OriginalAttributesSequence
    assert item.ModifiedAttributesSequence[0].get_item(PS).value in (None, b"", "")
    (kept,) = item.NonconformingModifiedAttributesSequence
    assert kept.SelectorAttribute == PS
    assert kept.NonconformingDataElementValue == b"0,7\\0,5 "
    assert back.PixelSpacing == [0.7, 0.5]


def test_resend_of_an_annotated_file_replaces_the_annotation(tmp_path: Path) -> None:
    src = make_ct(tmp_path / "ct.dcm")
    first = tmp_path / "first.dcm"
    process(src, first, [swap_edit()])
    ds, offset = read_header(first)
    annotate(ds, PipelineResult(effective=EffectiveSpacing(0.5, 0.7, "PixelSpacing")), now=NOW)
    second = tmp_path / "second.dcm"
    rewrite(first, second, ds, offset)
    back = dcmread(second)
    assert back.private_creators(0x0009) == ["SPACING_SCP"]
    assert read_annotation(back)[0x10] == "ok"
    assert read_annotation(back)[0x11] in ("", None)


# ------------------------------------------------------------------------- dciodvfy


def _no_new_errors(src: Path, dst: Path) -> None:
    before = dciodvfy_errors(src)
    after = dciodvfy_errors(dst)
    assert after - before == set(), f"new dciodvfy errors: {sorted(after - before)}"


@pytest.mark.dcmtk
@pytest.mark.parametrize("ts", [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
def test_dciodvfy_finds_no_new_error_after_a_swap(tmp_path: Path, ts: str) -> None:
    require_dciodvfy()
    src = make_ct(tmp_path / "ct.dcm", ts=ts)
    dst = tmp_path / "out.dcm"
    process(src, dst, [swap_edit()])
    _no_new_errors(src, dst)


@pytest.mark.dcmtk
def test_dciodvfy_finds_no_new_error_after_a_correction(tmp_path: Path) -> None:
    require_dciodvfy()
    src = make_ct(tmp_path / "ct.dcm", ps="0,7\\0,5")
    dst = tmp_path / "out.dcm"
    process(src, dst, [Edit("PS_COMMA", "CORRECT", ("PixelSpacing",), "0,7\\0,5", "0.7\\0.5")])
    before, after = dciodvfy_errors(src), dciodvfy_errors(dst)
    assert after - before == set(), f"new dciodvfy errors: {sorted(after - before)}"
    assert any("Pixel Spacing" in line for line in before)  # the defect was seen...
    assert not any("Pixel Spacing" in line for line in after)  # ...and is gone


@pytest.mark.dcmtk
def test_dciodvfy_finds_no_new_error_in_enhanced_mr(tmp_path: Path) -> None:
    require_dciodvfy()
    src = make_enhanced_mr(tmp_path / "emr.dcm")
    dst = tmp_path / "out.dcm"
    path = ("SharedFunctionalGroupsSequence", 0, "PixelMeasuresSequence", 0, "PixelSpacing")
    process(src, dst, [Edit("PS_SWAPPED", "CORRECT", path, "0.7\\0.5", "0.5\\0.7")])
    _no_new_errors(src, dst)


@pytest.mark.dcmtk
def test_dciodvfy_finds_no_new_error_in_test_files(tmp_path: Path) -> None:
    require_dciodvfy()
    for name, old, new in [
        ("MR_small_bigendian.dcm", "0.3125\\0.3125", "0.3125\\0.3126"),
        ("JPEG-lossy.dcm", "2.260000\\2.260000", "2.26\\2.26"),
    ]:
        src = pydicom_file(name)
        dst = tmp_path / name
        process(src, dst, [Edit("PS_TEST", "CORRECT", ("PixelSpacing",), old, new)])
        _no_new_errors(src, dst)
