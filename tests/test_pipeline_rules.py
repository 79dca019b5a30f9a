"""One test (or a few) per rule 1-20 and rule 22 of the spacing rulebook.

Every header is encoded byte by byte (tests/pipeline_builders.py) and read
back with ``dcmread(force=True, stop_before_pixels=True)``, so the pipeline
sees raw elements exactly as in production.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.dataset import Dataset

from scp.pipeline import (
    InstanceContext,
    PipelineResult,
    Severity,
    SpacingPolicy,
    SpacingReport,
    SwapRule,
    gather,
    raw_text,
    run_pipeline,
)
from tests.pipeline_builders import (
    CR_IMAGE_STORAGE,
    MG_IMAGE_STORAGE,
    RT_PLAN_STORAGE,
    build,
    ct,
    dx,
    enhanced_mr,
    frame,
    pixel_measures,
    sc,
    us,
    us_region,
)

CTX = InstanceContext(calling_ae_title="MODALITY1", called_ae_title="SPACING")


def run(
    spec: dict[str, Any],
    policy: SpacingPolicy | None = None,
    ctx: InstanceContext = CTX,
    *,
    implicit: bool = False,
) -> PipelineResult:
    return run_pipeline(build(spec, implicit=implicit), ctx, policy or SpacingPolicy())


def codes(result: PipelineResult, severity: Severity | None = None) -> set[str]:
    return {f.code for f in result.findings if severity is None or f.severity is severity}


def finding(result: PipelineResult, code: str) -> Any:
    matches = [f for f in result.findings if f.code == code]
    assert matches, f"{code} not in {[(f.code, f.message) for f in result.findings]}"
    return matches[0]


def spacing(result: PipelineResult) -> tuple[float | None, float | None]:
    return result.effective.row_mm, result.effective.column_mm


# --------------------------------------------------------------------------- raw reading


def test_raw_text_reads_what_was_sent() -> None:
    ds = build(ct(PixelSpacing="0.5mm\\0.5", ImagerPixelSpacing="0.30000000000000004\\0.5"))
    assert raw_text(ds, "PixelSpacing") == "0.5mm\\0.5"
    assert raw_text(ds, "ImagerPixelSpacing") == "0.30000000000000004\\0.5"
    assert raw_text(ds, "NominalScannedPixelSpacing") is None
    assert raw_text(ds, 0x00280030) == "0.5mm\\0.5"


def test_raw_text_after_pydicom_converted_the_value() -> None:
    ds = build(ct(PixelSpacing="0.5mm\\0,5\\"))
    _ = ds.PixelSpacing  # pydicom converts (and keeps strings for bad values)
    assert raw_text(ds, "PixelSpacing") == "0.5mm\\0,5\\"


def test_raw_text_of_an_in_memory_dataset() -> None:
    ds = Dataset()
    ds.PixelSpacing = [0.1 + 0.2, 0.5]  # pydicom would write 19 characters
    ds.Modality = "CT"
    assert raw_text(ds, "PixelSpacing") == "0.30000000000000004\\0.5"
    assert raw_text(ds, "Modality") == "CT"


def test_wrong_vr_and_implicit_vr_are_read_raw() -> None:
    explicit_un = build(ct(**{"PixelSpacing": None, "PixelSpacing:UN": "0.7\\0.7"}))
    assert raw_text(explicit_un, "PixelSpacing") == "0.7\\0.7"
    result = run(ct(PixelSpacing="0.7\\0.6", Rows=256), implicit=True)
    assert spacing(result) == (0.7, 0.6)
    assert gather(build(ct(), implicit=True)).rows == 512


# --------------------------------------------------------------------------- section A


@pytest.mark.parametrize("value", ["0.5mm\\0.5mm", "nan\\nan", "0,5\\0,5", "0.5\\inf", "1e999\\1"])
def test_rule_1_not_a_decimal_string_is_invalid(value: str) -> None:
    result = run(ct(PixelSpacing=value))
    found = finding(result, "PIXEL_SPACING_INVALID")
    assert found.severity is Severity.INVALID
    assert "Pixel Spacing (0028,0030)" in found.message and "rule" in found.message
    assert found.tag == "(0028,0030)"
    assert result.effective.source is None and not result.edits


def test_rule_1_message_cites_rule_and_tag() -> None:
    found = finding(run(ct(PixelSpacing="0.5mm")), "PIXEL_SPACING_INVALID")
    assert found.message == (
        "Pixel Spacing (0028,0030) value '0.5mm' is not a Decimal String (rule 1, PS3.5 6.2)"
    )
    assert found.rule == "1"


def test_rule_1_comma_decimal_corrected_for_a_named_device() -> None:
    rule = SwapRule(
        name="acme-comma", attributes=(), match={"Manufacturer": "AC*"}, comma_decimal=True
    )
    result = run(ct(PixelSpacing="0,5\\0,6"), SpacingPolicy(swap_rules=(rule,)))
    assert "PIXEL_SPACING_INVALID" not in codes(result)
    assert finding(result, "PIXEL_SPACING_REFORMATTED").severity is Severity.CORRECTED
    [edit] = result.edits
    assert (edit.reason, edit.path, edit.old, edit.new) == (
        "COERCE",
        ("PixelSpacing",),
        "0,5\\0,6",
        "0.5\\0.6",
    )
    assert spacing(result) == (0.5, 0.6)


def test_rule_1_comma_decimal_not_corrected_for_other_devices() -> None:
    rule = SwapRule(
        name="other", attributes=(), match={"Manufacturer": "Other*"}, comma_decimal=True
    )
    result = run(ct(PixelSpacing="0,5\\0,5"), SpacingPolicy(swap_rules=(rule,)))
    assert "PIXEL_SPACING_INVALID" in codes(result, Severity.INVALID)
    assert not result.edits


def test_rule_2_over_long_value_is_reformatted() -> None:
    result = run(ct(PixelSpacing="0.30000000000000004\\0.30000000000000004"))
    found = finding(result, "PIXEL_SPACING_REFORMATTED")
    assert found.severity is Severity.CORRECTED and found.rule == "2"
    [edit] = result.edits
    assert edit.reason == "COERCE" and edit.new == "0.3\\0.3"
    assert edit.old == "0.30000000000000004\\0.30000000000000004"
    assert spacing(result) == (0.3, 0.3)
    assert result.verdict == "corrected"


def test_rule_2_applies_to_every_ds_read() -> None:
    result = run(ct(ImagePositionPatient="-128.00000000000001\\-128\\0"))
    [edit] = result.edits
    assert edit.code == "DS_REFORMATTED" and edit.path == ("ImagePositionPatient",)
    assert edit.new == "-128.0\\-128\\0"


def test_rule_2_exponent_forms_are_legal() -> None:
    result = run(ct(PixelSpacing="1.367188e+00\\1.367188e+00"))
    assert not result.findings and not result.edits
    assert spacing(result) == (1.367188, 1.367188)


def test_rule_3_vm_1_is_a_warning_and_not_read_as_isotropic() -> None:
    result = run(ct(PixelSpacing="0.5"))
    found = finding(result, "PIXEL_SPACING_VM")
    assert found.severity is Severity.WARNING and found.rule == "3"
    assert result.effective.source is None


def test_rule_3_trailing_empty_value_dropped() -> None:
    result = run(ct(PixelSpacing="0.3\\0.3\\"))
    found = finding(result, "PIXEL_SPACING_VM")
    assert found.severity is Severity.CORRECTED
    [edit] = result.edits
    assert (edit.code, edit.reason, edit.old, edit.new) == (
        "PIXEL_SPACING_VM",
        "COERCE",
        "0.3\\0.3\\",
        "0.3\\0.3",
    )
    assert spacing(result) == (0.3, 0.3)


def test_rule_3_other_vm_is_invalid() -> None:
    result = run(ct(PixelSpacing="0.2\\0\\0.2"))
    found = finding(result, "PIXEL_SPACING_VM")
    assert found.severity is Severity.INVALID
    assert result.effective.source is None and not result.edits


def test_rule_4_padding_is_not_a_change() -> None:
    result = run(ct(PixelSpacing="  0.5 \\ 0.5  "))
    assert not result.findings and not result.edits
    assert spacing(result) == (0.5, 0.5)


# --------------------------------------------------------------------------- section B


def test_rule_5_zero_on_a_512_image_is_invalid() -> None:
    result = run(ct(PixelSpacing="0\\0"))
    found = finding(result, "PIXEL_SPACING_INVALID")
    assert found.rule == "5" and found.severity is Severity.INVALID
    assert spacing(result) == (None, None)  # never defaulted to 1.0


def test_rule_5_negative_is_invalid() -> None:
    assert "PIXEL_SPACING_INVALID" in codes(run(ct(PixelSpacing="-0.5\\0.5")))


def test_rule_5_zero_row_value_allowed_for_a_single_row() -> None:
    result = run(ct(PixelSpacing="0\\0.5", Rows=1))
    assert "PIXEL_SPACING_INVALID" not in codes(result)
    assert spacing(result) == (None, 0.5)


def test_rule_5_missing_spacing_is_never_assumed() -> None:
    result = run(ct(PixelSpacing=None))
    found = finding(result, "PIXEL_SPACING_MISSING")
    assert found.severity is Severity.INVALID
    assert result.effective.source is None and result.effective.row_mm is None


def test_rule_5_missing_spacing_severity_depends_on_the_image() -> None:
    assert finding(run(sc()), "PIXEL_SPACING_MISSING").severity is Severity.INFO
    cr = run(dx(SOPClassUID=CR_IMAGE_STORAGE, Modality="CR", ImagerPixelSpacing=None))
    assert finding(cr, "PIXEL_SPACING_MISSING").severity is Severity.WARNING
    not_an_image = run({"SOPClassUID": RT_PLAN_STORAGE, "Modality": "RTPLAN"})
    assert not not_an_image.findings


def test_rule_6_first_value_is_row_spacing() -> None:
    result = run(ct(PixelSpacing="0.7\\0.5"))
    assert result.effective.row_mm == 0.7 and result.effective.column_mm == 0.5


@pytest.mark.parametrize(
    ("ps", "suspect"),
    [("0.6\\0.5", False), ("0.5\\0.6", True)],
)
def test_rule_7_reconstruction_diameter_evidence(ps: str, suspect: bool) -> None:
    # 256 mm over 512 columns: column spacing (PS[1]) must be 0.5
    result = run(ct(PixelSpacing=ps, ReconstructionDiameter="256"))
    assert ("PIXEL_SPACING_SUSPECT_REVERSED" in codes(result, Severity.WARNING)) is suspect
    assert not result.edits  # evidence alone never swaps
    assert result.effective.row_mm == float(ps.split("\\")[0])


def test_rule_7_suspect_swapped_under_site_policy() -> None:
    policy = SpacingPolicy(on_suspect_reversed="swap")
    result = run(ct(PixelSpacing="0.5\\0.6", ReconstructionDiameter="256"), policy)
    [edit] = result.edits
    assert (edit.code, edit.reason, edit.old, edit.new) == (
        "PIXEL_SPACING_SWAPPED",
        "CORRECT",
        "0.5\\0.6",
        "0.6\\0.5",
    )
    assert spacing(result) == (0.6, 0.5)


def test_rule_7_swap_rule_swaps_and_records() -> None:
    rule = SwapRule(name="acme-reversed", match={"Manufacturer": "ACME", "StationName": "CT0?"})
    result = run(ct(PixelSpacing="0.5\\0.6"), SpacingPolicy(swap_rules=(rule,)))
    found = finding(result, "PIXEL_SPACING_SWAPPED")
    assert found.severity is Severity.CORRECTED and "acme-reversed" in found.message
    [edit] = result.edits
    assert (edit.reason, edit.path, edit.old, edit.new) == (
        "CORRECT",
        ("PixelSpacing",),
        "0.5\\0.6",
        "0.6\\0.5",
    )
    assert spacing(result) == (0.6, 0.5)


def test_rule_7_swap_rule_on_calling_ae_title_and_equal_values() -> None:
    rule = SwapRule(name="by-ae", match={"calling_ae_title": "MODALITY*"})
    policy = SpacingPolicy(swap_rules=(rule,))
    assert run(ct(PixelSpacing="0.5\\0.6"), policy).edits
    assert not run(ct(PixelSpacing="0.5\\0.50"), policy).edits  # equal values: no change
    other = InstanceContext(calling_ae_title="WORKSTATION")
    assert not run(ct(PixelSpacing="0.5\\0.6"), policy, other).edits


def test_rule_7_two_rules_naming_the_same_attribute_swap_once() -> None:
    rules = (
        SwapRule(name="a", match={"Manufacturer": "ACME"}),
        SwapRule(name="b", match={"Modality": "CT"}),
    )
    result = run(ct(PixelSpacing="0.5\\0.6"), SpacingPolicy(swap_rules=rules))
    assert len(result.edits) == 1 and spacing(result) == (0.6, 0.5)


def test_rule_7_rule_without_patterns_matches_nothing() -> None:
    rule = SwapRule(name="empty", match={})
    assert not run(ct(PixelSpacing="0.5\\0.6"), SpacingPolicy(swap_rules=(rule,))).edits


def test_rule_7_swap_rule_also_swaps_pixel_measures() -> None:
    frames = [frame("0.5\\0.6", z) for z in (0, 1, 2)]
    rule = SwapRule(name="mr", match={"Modality": "MR"})
    result = run(enhanced_mr(None, frames), SpacingPolicy(swap_rules=(rule,)))
    assert [e.path for e in result.edits] == [
        ("PerFrameFunctionalGroupsSequence", i, "PixelMeasuresSequence", 0, "PixelSpacing")
        for i in range(3)
    ]
    assert all(e.new == "0.6\\0.5" for e in result.edits)
    assert spacing(result) == (0.6, 0.5)


def test_rule_7_normalization_and_swap_edits_chain() -> None:
    rule = SwapRule(name="acme", match={"Manufacturer": "ACME"})
    result = run(ct(PixelSpacing="0.30000000000000004\\0.5\\"), SpacingPolicy(swap_rules=(rule,)))
    first, second = result.edits
    assert (first.code, first.new) == ("PIXEL_SPACING_REFORMATTED", "0.3\\0.5")
    assert (second.code, second.old, second.new) == (
        "PIXEL_SPACING_SWAPPED",
        "0.3\\0.5",
        "0.5\\0.3",
    )
    assert spacing(result) == (0.5, 0.3)


@pytest.mark.parametrize(
    ("extra", "evidence"),
    [
        ({"ImagerPixelSpacing": "0.6\\0.5"}, "Imager Pixel Spacing (0018,1164)"),
        ({"NominalScannedPixelSpacing": "0.6\\0.5"}, "Nominal Scanned Pixel Spacing (0018,2010)"),
        ({"PixelAspectRatio": "6\\5"}, "Pixel Aspect Ratio (0028,0034)"),
        (
            {"SharedFunctionalGroupsSequence": [pixel_measures("0.6\\0.5")]},
            "Pixel Measures Sequence (0028,9110)",
        ),
    ],
)
def test_rule_7_other_evidence(extra: dict[str, Any], evidence: str) -> None:
    result = run(dx(PixelSpacing="0.5\\0.6", PixelSpacingCalibrationType="GEOMETRY", **extra))
    found = finding(result, "PIXEL_SPACING_SUSPECT_REVERSED")
    assert evidence in found.message and found.rule == "7"


def test_rule_8_out_of_plausible_range_is_a_warning() -> None:
    low = run(ct(PixelSpacing="0.01\\0.01"))
    assert finding(low, "PIXEL_SPACING_OUT_OF_RANGE").severity is Severity.WARNING
    assert spacing(low) == (0.01, 0.01)  # never rescaled
    assert "PIXEL_SPACING_OUT_OF_RANGE" in codes(run(ct(PixelSpacing="6\\6")))
    assert "PIXEL_SPACING_OUT_OF_RANGE" not in codes(run(ct(PixelSpacing="4.9\\4.9")))


def test_rule_9_pixel_aspect_ratio_1_1_is_a_warning() -> None:
    result = run(ct(PixelAspectRatio="1\\1"))
    assert finding(result, "PIXEL_ASPECT_RATIO_PRESENT").severity is Severity.WARNING


def test_rule_9_pixel_aspect_ratio_alone_is_fine() -> None:
    result = run(sc(PixelAspectRatio="4\\3"))
    assert "PIXEL_ASPECT_RATIO_PRESENT" not in codes(result)
    assert "PIXEL_ASPECT_RATIO_MISMATCH" not in codes(result)


# --------------------------------------------------------------------------- section C


def test_rule_10_ps_equal_to_ips_without_psct_is_uncalibrated() -> None:
    result = run(dx(PixelSpacing="0.15\\0.15"))
    assert not result.findings
    assert result.effective.source == "PixelSpacing"
    assert result.effective.calibration == "at detector"


def test_rule_10_ps_different_from_ips_without_psct() -> None:
    result = run(dx(PixelSpacing="0.13\\0.13"))
    found = finding(result, "PIXEL_SPACING_CALIBRATION_UNKNOWN")
    assert found.severity is Severity.WARNING and found.rule == "10"
    assert result.effective.calibration == "uncertain"


def test_rule_10_geometry_with_ps_equal_to_ips() -> None:
    result = run(
        dx(
            PixelSpacing="0.15\\0.15",
            PixelSpacingCalibrationType="GEOMETRY",
            PixelSpacingCalibrationDescription="assumed 10% magnification",
        )
    )
    assert finding(result, "PIXEL_SPACING_GEOMETRY_UNCORRECTED").severity is Severity.WARNING
    assert result.effective.calibration == "corrected at modality"


def test_rule_11_fiducial_without_description() -> None:
    result = run(dx(PixelSpacing="0.12\\0.12", PixelSpacingCalibrationType="FIDUCIAL"))
    assert finding(result, "CALIBRATION_DESCRIPTION_MISSING").severity is Severity.WARNING
    assert "PIXEL_SPACING_CALIBRATION_UNKNOWN" not in codes(result)
    assert result.effective.calibration == "calibrated by operator"


def test_rule_11_unknown_calibration_type() -> None:
    result = run(
        dx(
            PixelSpacing="0.12\\0.12",
            PixelSpacingCalibrationType="MAGIC",
            PixelSpacingCalibrationDescription="x",
        )
    )
    assert "PIXEL_SPACING_CALIBRATION_TYPE_INVALID" in codes(result, Severity.WARNING)


def test_rule_12_imager_spacing_only_never_creates_pixel_spacing() -> None:
    result = run(dx())
    found = finding(result, "PIXEL_SPACING_IMAGER_ONLY")
    assert found.severity is Severity.INFO and found.rule == "12"
    assert not result.edits
    assert result.effective.source == "ImagerPixelSpacing"
    assert result.effective.calibration == "at detector"
    assert spacing(result) == (0.15, 0.15)


def mg(**overrides: Any) -> dict[str, Any]:
    spec = dx(
        SOPClassUID=MG_IMAGE_STORAGE,
        Modality="MG",
        ImagerPixelSpacing="0.1\\0.1",
        DistanceSourceToDetector="660",
        DistanceSourceToPatient="600",
        EstimatedRadiographicMagnificationFactor="1.1",
    )
    spec.update(overrides)
    return spec


def test_rule_13_ermf_consistent() -> None:
    result = run(mg())
    assert "ERMF_INCONSISTENT" not in codes(result) and "ERMF_INVALID" not in codes(result)
    assert result.effective.source == "ImagerPixelSpacing/ERMF"
    assert result.effective.calibration == "corrected using ERMF"
    assert result.effective.row_mm == pytest.approx(0.1 / 1.1)


def test_rule_13_ermf_inconsistent_with_sid_sod() -> None:
    result = run(mg(EstimatedRadiographicMagnificationFactor="1.2"))
    found = finding(result, "ERMF_INCONSISTENT")
    assert found.severity is Severity.WARNING and "(0018,1114)" in found.message


def test_rule_13_ermf_not_above_one() -> None:
    result = run(mg(EstimatedRadiographicMagnificationFactor="0.9"))
    assert finding(result, "ERMF_INVALID").severity is Severity.WARNING
    assert result.effective.source == "ImagerPixelSpacing"
    assert result.effective.calibration == "at detector"


@pytest.mark.parametrize(
    ("spec", "label"),
    [
        (
            dx(PixelSpacing="0.12\\0.12", PixelSpacingCalibrationType="FIDUCIAL"),
            "calibrated by operator",
        ),
        (
            dx(PixelSpacing="0.12\\0.12", PixelSpacingCalibrationType="GEOMETRY"),
            "corrected at modality",
        ),
        (mg(), "corrected using ERMF"),
        (dx(), "at detector"),
        (dx(ImagerPixelSpacing=None, PixelSpacing="0.12\\0.12"), "uncertain"),
        (ct(), None),
    ],
)
def test_rule_14_calibration_labels(spec: dict[str, Any], label: str | None) -> None:
    assert run(spec).effective.calibration == label


# --------------------------------------------------------------------------- section D


def test_rule_15_single_spatial_region() -> None:
    result = run(us([us_region(0.02, 0.03)]))
    assert not result.findings
    assert result.effective.source == "UltrasoundRegion"
    assert result.effective.row_mm == pytest.approx(0.3)  # |delta Y| cm -> mm
    assert result.effective.column_mm == pytest.approx(0.2)


def test_rule_15_doppler_negative_delta_and_non_spatial_regions() -> None:
    regions = [
        us_region(0.02, 0.02),
        us_region(0.02, -0.02),  # Doppler region: negative delta is legal
        us_region(0.01, 0.5, units=(4, 7)),  # seconds / cm/s: not spatial
        us_region(0.0, 0.02),  # zero delta: not spatial
    ]
    result = run(us(regions))
    assert "US_REGIONS_DIFFER" not in codes(result)
    assert spacing(result) == (pytest.approx(0.2), pytest.approx(0.2))


def test_rule_16_regions_with_different_deltas() -> None:
    result = run(us([us_region(0.02, 0.02), us_region(0.05, 0.05)]))
    found = finding(result, "US_REGIONS_DIFFER")
    assert found.severity is Severity.WARNING and "region 0" in found.message
    assert result.effective.source is None  # not collapsed into one spacing
    report = result.report
    assert isinstance(report, SpacingReport) and report.ultrasound_regions is not None
    assert [r.row_mm for r in report.ultrasound_regions] == [
        pytest.approx(0.2),
        pytest.approx(0.5),
    ]


# --------------------------------------------------------------------------- section E


def test_rule_17_shared_pixel_measures_are_used() -> None:
    frames = [frame(None, z) for z in (0, 1)]
    result = run(enhanced_mr(pixel_measures("0.8\\0.9"), frames))
    assert not result.findings
    assert result.effective.source == "PixelMeasuresSequence" and spacing(result) == (0.8, 0.9)


def test_rule_17_pixel_measures_in_shared_and_per_frame_is_malformed() -> None:
    frames = [frame("0.8\\0.8", z) for z in (0, 1)]
    result = run(enhanced_mr(pixel_measures("0.8\\0.8"), frames))
    found = finding(result, "PIXEL_MEASURES_MALFORMED")
    assert found.severity is Severity.INVALID and "both" in found.message
    assert result.effective.source is None


def test_rule_17_two_pixel_measures_items_is_malformed() -> None:
    frames = [frame("0.8\\0.8", z, measures_items=2) for z in (0, 1)]
    result = run(enhanced_mr(None, frames))
    assert "2 items" in finding(result, "PIXEL_MEASURES_MALFORMED").message


def test_rule_18_per_frame_values_that_differ() -> None:
    frames = [frame("0.8\\0.8", 0), frame("0.8\\0.8", 1), frame("0.9\\0.9", 2)]
    result = run(enhanced_mr(None, frames))
    found = finding(result, "PIXEL_MEASURES_VARY")
    assert found.severity is Severity.WARNING and found.rule == "18"
    assert result.effective.source is None  # spacing is per frame
    report = result.report
    assert isinstance(report, SpacingReport)
    per_frame = [
        g.pixel_measures.first.pair
        for g in report.per_frame_groups
        if g.pixel_measures and g.pixel_measures.first
    ]
    assert per_frame == [(0.8, 0.8), (0.8, 0.8), (0.9, 0.9)]


def test_rule_18_equal_per_frame_values_are_effective() -> None:
    frames = [frame("0.8\\0.8", z) for z in range(4)]
    result = run(enhanced_mr(None, frames))
    assert not result.findings and spacing(result) == (0.8, 0.8)


def test_rule_18_invalid_per_frame_value_reported_once() -> None:
    frames = [frame("0.8mm\\0.8", z) for z in range(50)]
    result = run(enhanced_mr(None, frames))
    invalid = [f for f in result.findings if f.code == "PIXEL_SPACING_INVALID"]
    assert len(invalid) == 1 and "and 45 more" in invalid[0].message


def test_rule_19_frame_positions_gathered_from_plane_position() -> None:
    frames = [frame("0.8\\0.8", z) for z in (0.0, 2.5, 5.0)]
    report = gather(build(enhanced_mr(None, frames)))
    positions = [g.position.numbers for g in report.per_frame_groups if g.position]
    assert positions == [(0.0, 0.0, 0.0), (0.0, 0.0, 2.5), (0.0, 0.0, 5.0)]


# --------------------------------------------------------------------------- section F


def test_rule_20_sc_with_plane_uses_pixel_spacing_not_nsps() -> None:
    spec = sc(
        PixelSpacing="0.5\\0.5",
        NominalScannedPixelSpacing="0.1\\0.1",
        ImagePositionPatient="0\\0\\0",
        ImageOrientationPatient="1\\0\\0\\0\\1\\0",
    )
    result = run(spec)
    assert "PIXEL_SPACING_CALIBRATION_UNKNOWN" not in codes(result)
    assert result.effective.source == "PixelSpacing" and spacing(result) == (0.5, 0.5)


def test_rule_20_sc_with_nsps_only() -> None:
    result = run(sc(NominalScannedPixelSpacing="0.1\\0.1"))
    found = finding(result, "NOMINAL_SCANNED_ONLY")
    assert found.severity is Severity.INFO
    assert result.effective.source == "NominalScannedPixelSpacing"
    assert result.effective.calibration == "on scanned medium"


# --------------------------------------------------------------------------- rule 22


def test_rule_22_iop_not_unit_length_is_invalid_geometry() -> None:
    result = run(ct(ImageOrientationPatient="1\\0\\0\\0\\0.9\\0"))
    found = finding(result, "GEOMETRY_INVALID")
    assert found.severity is Severity.INVALID and "length" in found.message


def test_rule_22_iop_not_orthogonal_and_ipp_malformed() -> None:
    result = run(
        ct(ImageOrientationPatient="1\\0\\0\\0.7071068\\0.7071068\\0", ImagePositionPatient="0\\0")
    )
    messages = [f.message for f in result.findings if f.code == "GEOMETRY_INVALID"]
    assert any("orthogonal" in m for m in messages)
    assert any("three numbers" in m for m in messages)


# --------------------------------------------------------------------------- robustness


def test_pipeline_never_raises_on_an_empty_dataset() -> None:
    result = run_pipeline(Dataset(), CTX, SpacingPolicy())
    assert result.verdict == "ok" and not result.edits


def test_simple_ct_header_runs_well_under_a_millisecond() -> None:
    ds = build(ct(ReconstructionDiameter="256"))
    policy = SpacingPolicy(swap_rules=(SwapRule(name="x", match={"Manufacturer": "Other"}),))
    run_pipeline(ds, CTX, policy)
    rounds = 200
    start = time.perf_counter()
    for _ in range(rounds):
        run_pipeline(ds, CTX, policy)
    per_call = (time.perf_counter() - start) / rounds
    assert per_call < 1e-3, f"{per_call * 1e6:.0f} us per call"


_TEXT = st.text(alphabet=st.characters(codec="latin-1", exclude_characters="\x00"), max_size=40)
_NUMBER_TEXT = st.one_of(
    _TEXT,
    st.lists(
        st.sampled_from(["0.5", "-1", "0", "1e999", "0,5", "", " 2 ", "nan", "1\\0"]), max_size=7
    ).map("\\".join),
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.fixed_dictionaries(
        {},
        optional={
            "PixelSpacing": _NUMBER_TEXT,
            "ImagerPixelSpacing": _NUMBER_TEXT,
            "NominalScannedPixelSpacing": _NUMBER_TEXT,
            "PixelAspectRatio": _NUMBER_TEXT,
            "EstimatedRadiographicMagnificationFactor": _NUMBER_TEXT,
            "DistanceSourceToDetector": _NUMBER_TEXT,
            "DistanceSourceToPatient": _NUMBER_TEXT,
            "ImageOrientationPatient": _NUMBER_TEXT,
            "ImagePositionPatient": _NUMBER_TEXT,
            "ReconstructionDiameter": _NUMBER_TEXT,
            "PixelSpacingCalibrationType": _TEXT,
            "Modality": st.sampled_from(["CT", "MR", "DX", "MG", "US", "OT", "NM", ""]),
            "Rows": st.binary(max_size=6),
            "Columns": st.integers(min_value=0, max_value=65535),
            "SequenceOfUltrasoundRegions": st.lists(
                st.fixed_dictionaries(
                    {},
                    optional={
                        "PhysicalUnitsXDirection": st.integers(0, 9),
                        "PhysicalUnitsYDirection": st.integers(0, 9),
                        "PhysicalDeltaX": st.floats(),
                        "PhysicalDeltaY": st.binary(max_size=9),
                    },
                ),
                min_size=1,
                max_size=3,
            ),
            "PerFrameFunctionalGroupsSequence": st.lists(
                st.builds(lambda s: {"PixelMeasuresSequence": [{"PixelSpacing": s}]}, _NUMBER_TEXT),
                min_size=1,
                max_size=3,
            ),
        },
    ),
    st.booleans(),
)
def test_pipeline_never_raises_on_garbage(spec: dict[str, Any], implicit: bool) -> None:
    rule = SwapRule(name="all", match={"Modality": "*"}, comma_decimal=True)
    for policy in (SpacingPolicy(), SpacingPolicy(swap_rules=(rule,), on_suspect_reversed="swap")):
        result = run(spec, policy, implicit=implicit)
        assert "PIPELINE_ERROR" not in result.codes, result.findings
        for edit in result.edits:
            assert edit.new is None or all(len(v) <= 16 for v in edit.new.split("\\"))
