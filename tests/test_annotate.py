"""The node's private block in group 0009 (see ``scp.pipeline.annotate``)."""

from __future__ import annotations

from datetime import UTC, datetime
from io import BytesIO

import pytest
from pydicom import config, dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    UID,
    CTImageStorage,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    generate_uid,
)

from scp import __version__
from scp.pipeline.annotate import (
    CALIBRATION,
    COLUMN_SPACING,
    EDITED_ATTRIBUTES,
    FINDING_CODES,
    LT_MAX_CHARS,
    NODE_VERSION,
    PROCESSED_AT,
    ROW_SPACING,
    SPACING_SOURCE,
    SUMMARY,
    VERDICT,
    annotate,
    read_annotation,
)
from scp.pipeline.model import Edit, EffectiveSpacing, Finding, PipelineResult, Severity

NOW = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)


def header() -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.Modality = "CT"
    ds.PixelSpacing = ["0.5", "0.7"]
    return ds


def corrected() -> PipelineResult:
    edit = Edit("PS_SWAPPED", "CORRECT", ("PixelSpacing",), "0.7\\0.5", "0.5\\0.7")
    return PipelineResult(
        findings=[
            Finding("PS_SWAPPED", Severity.CORRECTED, "swapped per rule", "7", "(0028,0030)"),
            Finding("PS_RANGE", Severity.WARNING, "plausible range exceeded", "8"),
        ],
        edits=[edit],
        effective=EffectiveSpacing(0.5, 0.7, "PixelSpacing", "uncertain"),
    )


def round_trip(ds: Dataset, ts: str) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = UID(ts)
    ds.file_meta = meta
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return dcmread(BytesIO(buffer.getvalue()), force=True)


def block_tags(ds: Dataset) -> list[int]:
    return sorted(int(t) for t in ds.keys() if t.group == 0x0009)  # noqa: SIM118


def test_block_layout_and_values() -> None:
    ds = header()
    annotate(ds, corrected(), now=NOW)
    assert ds[0x00090010].value == "SPACING_SCP"
    block = ds.private_block(0x0009, "SPACING_SCP")
    expected_vr = {
        VERDICT: "LO",
        FINDING_CODES: "LO",
        ROW_SPACING: "DS",
        COLUMN_SPACING: "DS",
        SPACING_SOURCE: "LO",
        CALIBRATION: "LO",
        NODE_VERSION: "LO",
        PROCESSED_AT: "DT",
        SUMMARY: "LT",
        EDITED_ATTRIBUTES: "LO",
    }
    assert {offset: block[offset].VR for offset in expected_vr} == expected_vr
    assert block[VERDICT].value == "corrected"
    assert list(block[FINDING_CODES].value) == ["PS_RANGE", "PS_SWAPPED"]
    assert str(block[ROW_SPACING].value) == "0.5"
    assert str(block[COLUMN_SPACING].value) == "0.7"
    assert block[SPACING_SOURCE].value == "PixelSpacing"
    assert block[CALIBRATION].value == "uncertain"
    assert block[NODE_VERSION].value == f"spacing-scp {__version__}"
    assert block[PROCESSED_AT].value == "20240506070809.123456+0000"
    assert block[EDITED_ATTRIBUTES].value == "PixelSpacing"
    summary = block[SUMMARY].value
    assert summary.startswith(f"spacing-scp {__version__}: corrected")
    assert "row 0.5 mm, column 0.7 mm" in summary
    assert "PS_SWAPPED [corrected]" in summary and "rule 7" in summary
    assert "'0.7\\\\0.5' -> '0.5\\\\0.7'" in summary


def test_block_is_creator_plus_ten_elements() -> None:
    ds = header()
    annotate(ds, corrected(), now=NOW)
    assert block_tags(ds) == [0x00090010] + [0x00091000 | o for o in range(0x10, 0x1A)]


def test_no_usable_spacing_is_written_empty_never_one() -> None:
    ds = header()
    annotate(ds, PipelineResult(), now=NOW)
    block = ds.private_block(0x0009, "SPACING_SCP")
    assert block[VERDICT].value == "ok"
    for offset in (FINDING_CODES, ROW_SPACING, COLUMN_SPACING, SPACING_SOURCE, CALIBRATION):
        assert block[offset].value in (None, "", []), hex(offset)
    assert "spacing: none usable" in block[SUMMARY].value
    annotate(ds, PipelineResult(effective=EffectiveSpacing(float("nan"), 0.5)), now=NOW)
    assert block[ROW_SPACING].value in (None, "")


def test_spacing_is_formatted_within_sixteen_bytes() -> None:
    ds = header()
    result = PipelineResult(effective=EffectiveSpacing(1 / 3, 123456.789012345678, "PixelSpacing"))
    annotate(ds, result, now=NOW)
    block = ds.private_block(0x0009, "SPACING_SCP")
    for offset in (ROW_SPACING, COLUMN_SPACING):
        text = str(block[offset].value)
        assert len(text) <= 16
        assert float(text) == pytest.approx(float(text))
    assert float(str(block[ROW_SPACING].value)) == pytest.approx(1 / 3, rel=1e-12)


def test_another_creator_keeps_its_slot() -> None:
    ds = header()
    ds.add_new(0x00090010, "LO", "OTHER VENDOR")
    ds.add_new(0x00091001, "LO", "theirs")
    annotate(ds, corrected(), now=NOW)
    assert ds[0x00090010].value == "OTHER VENDOR"
    assert ds[0x00091001].value == "theirs"
    assert ds[0x00090011].value == "SPACING_SCP"
    assert ds[0x00091110].value == "corrected"


def test_orphan_elements_make_a_slot_unusable() -> None:
    ds = header()
    ds.add_new(0x00091010, "LO", "orphan without creator")
    annotate(ds, corrected(), now=NOW)
    assert ds[0x00091010].value == "orphan without creator"
    assert ds[0x00090011].value == "SPACING_SCP"


def test_reannotation_replaces_the_block() -> None:
    ds = header()
    annotate(ds, corrected(), now=NOW)
    ds.add_new(0x000910FF, "LO", "from an older version")
    annotate(ds, PipelineResult(effective=EffectiveSpacing(0.5, 0.7, "PixelSpacing")), now=NOW)
    assert ds.private_creators(0x0009) == ["SPACING_SCP"]
    assert 0x000910FF not in ds
    values = read_annotation(ds)
    assert values[VERDICT] == "ok"
    assert values[FINDING_CODES] in ("", None)
    assert values[EDITED_ATTRIBUTES] in ("", None)


def test_duplicate_blocks_of_ours_are_merged() -> None:
    ds = header()
    ds.add_new(0x00090010, "LO", "SPACING_SCP")
    ds.add_new(0x00091010, "LO", "stale")
    ds.add_new(0x00090012, "LO", "SPACING_SCP")
    ds.add_new(0x00091210, "LO", "stale too")
    annotate(ds, corrected(), now=NOW)
    assert ds.private_creators(0x0009) == ["SPACING_SCP"]
    assert 0x00091210 not in ds and 0x00090012 not in ds
    assert ds[0x00091010].value == "corrected"


@pytest.mark.parametrize(
    "ts", [ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian]
)
def test_reannotating_a_received_file(ts: str) -> None:
    ds = header()
    annotate(ds, corrected(), now=NOW)
    back = round_trip(ds, ts)
    first = read_annotation(back)
    assert first[VERDICT] == "corrected"
    assert first[ROW_SPACING] == "0.5"
    assert first[FINDING_CODES] == "PS_RANGE\\PS_SWAPPED"
    annotate(back, PipelineResult(), now=NOW)
    again = round_trip(back, ts)
    assert again.private_creators(0x0009) == ["SPACING_SCP"]
    assert read_annotation(again)[VERDICT] == "ok"
    assert block_tags(again) == block_tags(back)


def test_summary_is_ascii_and_bounded() -> None:
    findings = [
        Finding(f"CODE_{i}", Severity.WARNING, "gap \u2265 2\u00d7 median, \u00b5m\ttab\x01", "26")
        for i in range(400)
    ]
    ds = header()
    annotate(ds, PipelineResult(findings=findings), now=NOW)
    summary = ds.private_block(0x0009, "SPACING_SCP")[SUMMARY].value
    assert len(summary) <= LT_MAX_CHARS
    assert summary.endswith("...")
    assert summary.isascii()
    assert "gap >= 2x median, um tab " in summary
    assert "\t" not in summary and "\x01" not in summary
    codes = ds.private_block(0x0009, "SPACING_SCP")[FINDING_CODES].value
    assert len(codes) == 400


def test_codes_are_valid_lo_values() -> None:
    finding = Finding("BAD\\CODE" + "X" * 80, Severity.INFO, "m")
    ds = header()
    annotate(ds, PipelineResult(findings=[finding]), now=NOW)
    code = ds.private_block(0x0009, "SPACING_SCP")[FINDING_CODES].value
    assert "\\" not in code and len(code) == 64


def test_processing_time_defaults_to_now() -> None:
    ds = header()
    annotate(ds, PipelineResult())
    stamp = ds.private_block(0x0009, "SPACING_SCP")[PROCESSED_AT].value
    assert stamp.startswith(datetime.now(UTC).strftime("%Y%m%d")) and stamp.endswith("+0000")


def test_empty_creator_is_refused() -> None:
    with pytest.raises(ValueError):
        annotate(header(), PipelineResult(), creator="  ")


@pytest.mark.filterwarnings("ignore:The value length")
def test_other_creator_pydicom_refuses_under_strict_reading() -> None:
    ds = round_trip(header(), ExplicitVRLittleEndian)
    ds.add_new(0x00090010, "LO", "V" * 70)  # longer than LO allows
    ds = round_trip(ds, ExplicitVRLittleEndian)
    with config.strict_reading():
        annotate(ds, corrected(), now=NOW)
    assert ds[0x00090011].value == "SPACING_SCP"
    assert read_annotation(ds)[VERDICT] == "corrected"
