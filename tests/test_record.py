"""Applying edits and recording them in Original Attributes Sequence (PS3.3 C.12.1.1.9)."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta, timezone
from io import BytesIO

import pytest
from pydicom import config, dcmread
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.sequence import Sequence
from pydicom.tag import Tag
from pydicom.uid import (
    UID,
    CTImageStorage,
    EnhancedMRImageStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    generate_uid,
)

from scp.pipeline.model import Edit
from scp.pipeline.record import (
    EditError,
    apply_edits,
    element_text,
    format_dt,
    value_problem,
    vm_allows,
)

NOW = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
AE = "SPACING_SCP"
PS = 0x00280030
SFGS = 0x52009229
PMS = 0x00289110
SHARED_PS = ("SharedFunctionalGroupsSequence", 0, "PixelMeasuresSequence", 0, "PixelSpacing")


def ct(ps: bytes = b"0.7\\0.5 ") -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.Modality = "CT"
    ds.Rows = 512
    ds.Columns = 512
    ds.ReconstructionDiameter = "358.4"
    ds.add_new(PS, "DS", "0.7\\0.5")
    return received(ds, {PS: ps})


def enhanced_mr(ps: bytes = b"0.7\\0.5 ") -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = EnhancedMRImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.Modality = "MR"
    measures = Dataset()
    measures.add_new(PS, "DS", "0.7\\0.5")
    measures.SliceThickness = "2"
    orientation = Dataset()
    orientation.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    shared = Dataset()
    shared.PixelMeasuresSequence = Sequence([measures])
    shared.PlaneOrientationSequence = Sequence([orientation])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    return received(ds, {PS: ps})


def received(
    ds: Dataset, replace: dict[int, bytes], ts: str = ExplicitVRLittleEndian
) -> FileDataset:
    """``ds`` as the node receives it: written, then read back without pixels.

    ``replace`` swaps the bytes of a value (same length) to make defects that
    pydicom would refuse to encode.
    """
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = UID(ts)
    ds.file_meta = meta
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    data = buffer.getvalue()
    for tag, value in replace.items():
        assert tag == PS
        data = data.replace(b"0.7\\0.5 ", value, 1)
    return dcmread(BytesIO(data), force=True, stop_before_pixels=True)


def encode(ds: Dataset) -> bytes:
    implicit, little = ds.original_encoding
    assert implicit is not None and little is not None
    fp = DicomBytesIO()
    fp.is_implicit_VR, fp.is_little_endian = implicit, little
    write_dataset(fp, ds)
    return fp.getvalue()


def swap(old: str = "0.7\\0.5", new: str = "0.5\\0.7") -> Edit:
    return Edit("PS_SWAPPED", "CORRECT", ("PixelSpacing",), old, new)


def last_record(ds: Dataset) -> Dataset:
    return ds.OriginalAttributesSequence[-1]


# ------------------------------------------------------------------ one modification


def test_swap_records_the_previous_value_as_received() -> None:
    ds = ct()
    uid = ds.SOPInstanceUID
    raw = ds.get_item(PS)
    assert isinstance(raw, RawDataElement)
    apply_edits(ds, [swap()], AE, NOW)

    assert [str(v) for v in ds.PixelSpacing] == ["0.5", "0.7"]
    assert ds.SOPInstanceUID == uid
    assert ds.InstanceCoercionDateTime == "20240506070809.123456+0000"
    (record,) = ds.OriginalAttributesSequence
    assert record.AttributeModificationDateTime == "20240506070809.123456+0000"
    assert record.ModifyingSystem == AE
    assert record.ReasonForTheAttributeModification == "CORRECT"
    assert "SourceOfPreviousValues" in record  # Type 2: present, empty
    assert record.SourceOfPreviousValues in ("", None)
    assert "NonconformingModifiedAttributesSequence" not in record
    (modified,) = record.ModifiedAttributesSequence
    assert list(modified.keys()) == [PS]
    assert modified.get_item(PS) is raw  # the received element itself: its bytes
    assert b"0.7\\0.5 " in encode(ds)


def test_reason_is_coerce_when_no_edit_corrects() -> None:
    ds = ct()
    edit = Edit("SITE_POLICY", "COERCE", ("PixelSpacing",), "0.7\\0.5", "0.70\\0.50")
    apply_edits(ds, [edit], AE, NOW)
    assert last_record(ds).ReasonForTheAttributeModification == "COERCE"


def test_reason_is_correct_if_any_edit_corrects() -> None:
    ds = ct()
    edits = [
        Edit("SITE_POLICY", "COERCE", ("ReconstructionDiameter",), "358.4", "358.40"),
        swap(),
    ]
    apply_edits(ds, edits, AE, NOW)
    record = last_record(ds)
    assert record.ReasonForTheAttributeModification == "CORRECT"
    (modified,) = record.ModifiedAttributesSequence
    assert sorted(modified.keys()) == [0x00181100, PS]
    assert ds.ReconstructionDiameter == 358.4
    assert str(ds.ReconstructionDiameter) == "358.40"


def test_one_item_per_call_and_earlier_items_kept() -> None:
    ds = ct()
    earlier = Dataset()
    earlier.ModifyingSystem = "OTHER"
    earlier.ReasonForTheAttributeModification = "COERCE"
    earlier.AttributeModificationDateTime = "20200101"
    earlier.SourceOfPreviousValues = ""
    earlier.ModifiedAttributesSequence = Sequence([Dataset()])
    ds.OriginalAttributesSequence = Sequence([earlier])

    apply_edits(ds, [swap()], AE, NOW)
    later = NOW + timedelta(hours=1)
    apply_edits(ds, [swap("0.5\\0.7", "0.7\\0.5")], AE, later)

    first, second, third = ds.OriginalAttributesSequence
    assert first.ModifyingSystem == "OTHER"
    assert [str(v) for v in second.ModifiedAttributesSequence[0].PixelSpacing] == ["0.7", "0.5"]
    assert [str(v) for v in third.ModifiedAttributesSequence[0].PixelSpacing] == ["0.5", "0.7"]
    assert ds.InstanceCoercionDateTime == format_dt(later)


def test_existing_raw_original_attributes_sequence_is_kept() -> None:
    ds = ct()
    apply_edits(ds, [swap()], AE, NOW)
    again = dcmread(BytesIO(_save(ds)), force=True)
    assert isinstance(again.get_item(0x04000561), RawDataElement)
    apply_edits(again, [swap("0.5\\0.7", "0.7\\0.5")], AE, NOW)
    assert len(again.OriginalAttributesSequence) == 2


def _save(ds: Dataset) -> bytes:
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def test_no_edits_change_nothing() -> None:
    ds = ct()
    before = encode(ds)
    apply_edits(ds, [], AE, NOW)
    assert encode(ds) == before
    assert "OriginalAttributesSequence" not in ds


def test_deleting_an_element_records_it() -> None:
    ds = ct()
    apply_edits(ds, [Edit("PS_DROP", "CORRECT", ("PixelSpacing",), "0.7\\0.5", None)], AE, NOW)
    assert "PixelSpacing" not in ds
    assert [str(v) for v in last_record(ds).ModifiedAttributesSequence[0].PixelSpacing] == [
        "0.7",
        "0.5",
    ]


def test_adding_an_absent_element_records_it_with_zero_length() -> None:
    ds = ct()
    edit = Edit("ADD", "COERCE", ("SpacingBetweenSlices",), None, "1.25")
    apply_edits(ds, [edit], AE, NOW)
    assert ds.SpacingBetweenSlices == 1.25
    previous = last_record(ds).ModifiedAttributesSequence[0]
    assert previous.get_item(0x00180088).value in (None, "")


# ----------------------------------------------------------------------- sequences


def test_nested_edit_records_the_whole_top_level_sequence() -> None:
    ds = enhanced_mr()
    received_sequence = copy.deepcopy(ds.get_item(SFGS))
    apply_edits(ds, [Edit("PS_SWAPPED", "CORRECT", SHARED_PS, "0.7\\0.5", "0.5\\0.7")], AE, NOW)

    measures = ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
    assert [str(v) for v in measures.PixelSpacing] == ["0.5", "0.7"]
    (modified,) = last_record(ds).ModifiedAttributesSequence
    assert list(modified.keys()) == [SFGS]
    assert modified.get_item(SFGS) == received_sequence  # raw: the received bytes
    old = modified.SharedFunctionalGroupsSequence[0]
    assert [str(v) for v in old.PixelMeasuresSequence[0].PixelSpacing] == ["0.7", "0.5"]
    assert old.PlaneOrientationSequence[0].ImageOrientationPatient == [1, 0, 0, 0, 1, 0]


def test_nested_edit_after_the_pipeline_decoded_the_sequence() -> None:
    ds = enhanced_mr()
    assert ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing[0] == 0.7
    apply_edits(ds, [Edit("PS_SWAPPED", "CORRECT", SHARED_PS, "0.7\\0.5", "0.5\\0.7")], AE, NOW)
    old = last_record(ds).ModifiedAttributesSequence[0].SharedFunctionalGroupsSequence[0]
    assert [str(v) for v in old.PixelMeasuresSequence[0].PixelSpacing] == ["0.7", "0.5"]
    new = ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
    assert [str(v) for v in new.PixelSpacing] == ["0.5", "0.7"]


def test_nonconforming_nested_value_is_blanked_in_the_copy_and_kept_as_bytes() -> None:
    ds = enhanced_mr(ps=b"0,7\\0,5 ")
    edit = Edit("PS_COMMA", "CORRECT", SHARED_PS, "0,7\\0,5", "0.7\\0.5")
    apply_edits(ds, [edit], AE, NOW)
    record = last_record(ds)
    old = record.ModifiedAttributesSequence[0].SharedFunctionalGroupsSequence[0]
    assert old.PixelMeasuresSequence[0].get_item(PS).value in (None, "", b"")
    assert old.PixelMeasuresSequence[0].SliceThickness == 2  # the rest of the sequence kept
    (kept,) = record.NonconformingModifiedAttributesSequence
    assert kept.SelectorAttribute == PS
    assert kept.SelectorValueNumber == 0
    assert list(kept.SelectorSequencePointer) == [SFGS, PMS]
    assert [int(v) for v in kept.SelectorSequencePointerItems] == [1, 1]
    assert kept.NonconformingDataElementValue == b"0,7\\0,5 "


def test_bad_paths_are_refused() -> None:
    ds = enhanced_mr()
    for path in [
        (),
        ("SharedFunctionalGroupsSequence", 0),
        ("SharedFunctionalGroupsSequence", 1, "PixelMeasuresSequence", 0, "PixelSpacing"),
        ("PerFrameFunctionalGroupsSequence", 0, "PixelMeasuresSequence", 0, "PixelSpacing"),
        ("Modality", 0, "PixelSpacing"),
        ("NotAKeyword",),
        ("SOPInstanceUID",),
        ("OriginalAttributesSequence",),
        ("TransferSyntaxUID",),
        ("SharedFunctionalGroupsSequence",),  # a whole sequence: not a value edit
    ]:
        with pytest.raises(EditError):
            apply_edits(ds, [Edit("X", "CORRECT", path, None, "1")], AE, NOW)
    assert "OriginalAttributesSequence" not in ds


# ------------------------------------------------------------ nonconforming values


@pytest.mark.parametrize(
    ("received_bytes", "old"),
    [
        (b"0,7\\0,5 ", "0,7\\0,5"),  # comma decimal (rule 1)
        (b"0.3\\0.3\\", "0.3\\0.3\\"),  # trailing empty value: VM 3 (rule 3)
        (b"0.5mm\\.5", "0.5mm\\.5"),  # units (rule 1)
    ],
)
def test_nonconforming_value_goes_to_the_nonconforming_sequence(
    received_bytes: bytes, old: str
) -> None:
    ds = ct(ps=received_bytes)
    apply_edits(ds, [Edit("PS_FIX", "CORRECT", ("PixelSpacing",), old, "0.5\\0.5")], AE, NOW)
    record = last_record(ds)
    assert record.ModifiedAttributesSequence[0].get_item(PS).value in (None, "", b"")
    (kept,) = record.NonconformingModifiedAttributesSequence
    assert kept.SelectorAttribute == PS
    assert "SelectorSequencePointer" not in kept
    assert kept.NonconformingDataElementValue == received_bytes
    assert [str(v) for v in ds.PixelSpacing] == ["0.5", "0.5"]


def test_too_long_value_is_nonconforming() -> None:
    long = "0.12345678901234567"  # 19 bytes (rule 2)
    value = f"{long}\\{long} ".encode()
    ds = Dataset()
    ds.SOPInstanceUID = "1.2.3"
    ds[PS] = RawDataElement(Tag(PS), "DS", len(value), value, 0, False, True)
    edit = Edit("PS_LONG", "CORRECT", ("PixelSpacing",), f"{long}\\{long}", "0.123\\0.123")
    apply_edits(ds, [edit], AE, NOW)
    (kept,) = last_record(ds).NonconformingModifiedAttributesSequence
    assert kept.NonconformingDataElementValue == value


def test_edit_works_under_strict_reading_and_restores_settings() -> None:
    ds = ct(ps=b"0,7\\0,5 ")
    with config.strict_reading():
        with pytest.raises(ValueError):
            _ = copy.deepcopy(ds).PixelSpacing  # what pydicom thinks of the old value
        apply_edits(
            ds, [Edit("PS_COMMA", "CORRECT", ("PixelSpacing",), "0,7\\0,5", "0.7\\0.5")], AE, NOW
        )
        assert config.settings.reading_validation_mode == config.RAISE
    assert [str(v) for v in ds.PixelSpacing] == ["0.7", "0.5"]


# ---------------------------------------------------------------- refused edits


def test_stale_edit_is_refused_and_nothing_changes() -> None:
    ds = ct()
    before = encode(ds)
    with pytest.raises(EditError, match="stale"):
        apply_edits(ds, [swap(), swap("0.6\\0.5", "0.5\\0.6")], AE, NOW)
    assert encode(ds) == before


def test_old_value_padding_is_not_a_difference() -> None:
    ds = ct(ps=b" 0.7\\0.5")
    apply_edits(ds, [swap("0.7 \\ 0.5")], AE, NOW)
    assert [str(v) for v in ds.PixelSpacing] == ["0.5", "0.7"]


def test_sequential_edits_of_one_element() -> None:
    ds = ct(ps=b"0,7\\0,5 ")
    edits = [
        Edit("PS_COMMA", "CORRECT", ("PixelSpacing",), "0,7\\0,5", "0.7\\0.5"),
        swap("0.7\\0.5", "0.5\\0.7"),
    ]
    apply_edits(ds, edits, AE, NOW)
    assert [str(v) for v in ds.PixelSpacing] == ["0.5", "0.7"]
    record = last_record(ds)
    assert len(record.NonconformingModifiedAttributesSequence) == 1


@pytest.mark.parametrize(
    "new",
    ["0,5\\0,5", "0.12345678901234567\\0.5", "0.5", "0.5\\0.5\\", "nan\\nan", "\u0660.5\\0.5"],
)
def test_invalid_new_values_are_refused(new: str) -> None:
    ds = ct()
    with pytest.raises(EditError, match="invalid"):
        apply_edits(ds, [swap(new=new)], AE, NOW)
    assert "OriginalAttributesSequence" not in ds


def test_modifying_system_must_be_valid_lo() -> None:
    ds = ct()
    with pytest.raises(EditError):
        apply_edits(ds, [swap()], "A" * 65, NOW)
    with pytest.raises(EditError):
        apply_edits(ds, [swap()], "A\\B", NOW)


# ---------------------------------------------------------------------- encodings


def test_implicit_vr_header_round_trip() -> None:
    base = Dataset()
    base.SOPClassUID = CTImageStorage
    base.SOPInstanceUID = generate_uid()
    base.add_new(PS, "DS", "0.7\\0.5")
    ds = received(base, {}, ts=ImplicitVRLittleEndian)
    raw = ds.get_item(PS)
    assert isinstance(raw, RawDataElement) and raw.VR is None  # VR never looked up
    apply_edits(ds, [swap()], AE, NOW)
    data = encode(ds)
    back = dcmread(BytesIO(data), force=True)
    assert [str(v) for v in back.PixelSpacing] == ["0.5", "0.7"]
    previous = back.OriginalAttributesSequence[0].ModifiedAttributesSequence[0]
    assert [str(v) for v in previous.PixelSpacing] == ["0.7", "0.5"]


# ---------------------------------------------------------------------- helpers


def test_format_dt() -> None:
    assert format_dt(datetime(2024, 1, 2, 3, 4, 5)) == "20240102030405.000000"
    assert format_dt(NOW) == "20240506070809.123456+0000"
    east = datetime(2024, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=5, minutes=30)))
    assert format_dt(east) == "20240102030405.000000+0530"


def test_vm_allows() -> None:
    assert vm_allows("2", 2) and not vm_allows("2", 1) and not vm_allows("2", 3)
    assert vm_allows("1-n", 5) and not vm_allows("2-n", 1)
    assert vm_allows("2-2n", 4) and not vm_allows("2-2n", 3)
    assert vm_allows("1-3", 3) and not vm_allows("1-3", 4)
    assert vm_allows("2", 0)  # empty: a matter of Type


def test_value_problem() -> None:
    assert value_problem("DS", "2", "0.7\\0.5 ") is None
    assert value_problem("DS", "2", " 0.7 \\ 0.5 ") is None
    assert value_problem("DS", "2", "") is None
    assert value_problem("DS", "2", "0.5") is not None
    assert value_problem("DS", "2", "0,5\\0,5") is not None
    assert value_problem("DS", "1", "1e999") is None  # a DS; unusable is the pipeline's call
    assert value_problem("CS", "1", "lower") is not None
    assert value_problem("OB", "1", "anything") is None


def test_element_text() -> None:
    raw = RawDataElement(Tag(PS), "DS", 8, b"0,7\\0,5 ", 0, False, True)
    assert element_text(raw) == "0,7\\0,5 "
    assert element_text(DataElement(PS, "DS", "0.70\\0.5")) == "0.70\\0.5"
    assert element_text(None) is None
