"""Run every real file of pydicom's test files and of pydicom-data through the pipeline.

The files are globbed (``pydicom.data.get_testdata_files`` may go to the
network).  A file pydicom cannot read at all is skipped; ``run_pipeline``
itself must never raise nor fall back to ``PIPELINE_ERROR``, whatever the
header holds.
"""

from __future__ import annotations

import os
from pathlib import Path

import pydicom
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset

from scp.pipeline import InstanceContext, PipelineResult, SpacingPolicy, run_pipeline

PYDICOM_TEST_FILES = Path(os.path.dirname(pydicom.data.__file__)) / "test_files"


def _data_store() -> Path | None:
    try:
        import data_store  # the pydicom-data package
    except ImportError:
        return None
    return Path(os.path.dirname(data_store.__file__)) / "data"


DATA_STORE = _data_store()


def _corpus() -> list[Path]:
    roots = [PYDICOM_TEST_FILES] + ([DATA_STORE] if DATA_STORE is not None else [])
    files = []
    for root in roots:
        for path in sorted(root.rglob("*")):
            if path.is_file() and (path.suffix == ".dcm" or not path.suffix):
                files.append(path)
    return files


CORPUS = _corpus()
POLICY = SpacingPolicy()
CTX = InstanceContext(calling_ae_title="CORPUS")


def _read(path: Path) -> Dataset:
    try:
        return dcmread(path, stop_before_pixels=True, force=True)
    except Exception as exc:  # not readable at all: not the pipeline's business
        pytest.skip(f"pydicom cannot read {path.name}: {type(exc).__name__}")


def _run(name: str) -> PipelineResult:
    matches = [p for p in CORPUS if p.name == name]
    if not matches:
        pytest.skip(f"{name} not in the corpus (pydicom-data not installed?)")
    return run_pipeline(_read(matches[0]), CTX, POLICY)


def test_corpus_is_not_empty() -> None:
    assert len(CORPUS) > 50


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: str(p.relative_to(p.parents[1])))
def test_pipeline_handles_every_file(path: Path) -> None:
    result = run_pipeline(_read(path), CTX, POLICY)
    assert "PIPELINE_ERROR" not in result.codes, result.findings
    effective = result.effective
    for value in (effective.row_mm, effective.column_mm):
        assert value is None or value > 0  # never a default, never an invalid value
    if effective.source is None:
        assert effective.row_mm is None and effective.column_mm is None


@pytest.mark.parametrize("name", ["RG1_UNCI.dcm", "RG1_UNCR.dcm", "RG1_J2KI.dcm", "RG1_J2KR.dcm"])
def test_cr_with_zero_pixel_spacing_is_invalid(name: str) -> None:
    """pydicom-data's CR with Pixel Spacing ``0.000\\0.000`` (rule 5)."""
    result = _run(name)
    assert "PIXEL_SPACING_INVALID" in result.codes
    assert result.verdict == "invalid"
    assert result.effective.source is None
    assert not result.edits  # never guessed


def test_cr_without_pixel_spacing() -> None:
    result = _run("RG3_UNCI.dcm")
    assert "PIXEL_SPACING_MISSING" in result.codes
    assert result.effective.source is None


def test_cr_with_imager_pixel_spacing_only() -> None:
    """dicomdirtests CR: Imager Pixel Spacing 0.1\\0.1 and no Pixel Spacing (rule 12)."""
    result = _run("6154")
    assert "PIXEL_SPACING_IMAGER_ONLY" in result.codes
    assert result.effective.source == "ImagerPixelSpacing"
    assert result.effective.calibration == "at detector"
    assert not result.edits


def test_us_with_one_spatial_and_one_doppler_region() -> None:
    """OBXXXX1A: a 2D region in cm and a spectral region (seconds, no Y units)."""
    result = _run("OBXXXX1A.dcm")
    assert "US_REGIONS_DIFFER" not in result.codes
    assert result.effective.source == "UltrasoundRegion"
    assert result.effective.row_mm == pytest.approx(0.2622878766196998)


def test_us_with_two_agreeing_spatial_regions() -> None:
    """gdcm-US-ALOKA-16: two spatial regions with equal deltas and a non-spatial one."""
    result = _run("gdcm-US-ALOKA-16.dcm")
    assert "US_REGIONS_DIFFER" not in result.codes
    assert result.effective.source == "UltrasoundRegion"
    assert result.effective.column_mm == pytest.approx(0.3826530650258064)


def test_enhanced_ct_and_seg_use_shared_pixel_measures() -> None:
    for name, expected in (("eCT_Supplemental.dcm", 0.388672), ("liver.dcm", 0.810547)):
        result = _run(name)
        assert result.effective.source == "PixelMeasuresSequence", name
        assert result.effective.row_mm == pytest.approx(expected)
        assert "PIXEL_MEASURES_MALFORMED" not in result.codes


def test_enhanced_mr_without_functional_groups_has_no_spacing() -> None:
    result = _run("emri_small.dcm")
    assert "PIXEL_SPACING_MISSING" in result.codes
    assert result.verdict == "invalid"


def test_ct_and_mr_are_clean() -> None:
    for name in ("CT_small.dcm", "MR_small.dcm", "MR_small_bigendian.dcm", "MR_small_implicit.dcm"):
        result = _run(name)
        assert result.verdict == "ok", (name, result.findings)
        assert result.effective.source == "PixelSpacing"


def test_anisotropic_ct_without_evidence_is_not_suspect() -> None:
    """dicomdirtests CT 6293: PS 0.545455\\0.596847, no Reconstruction Diameter."""
    result = _run("6293")
    assert "PIXEL_SPACING_SUSPECT_REVERSED" not in result.codes
    assert (result.effective.row_mm, result.effective.column_mm) == (0.545455, 0.596847)


def test_non_images_have_no_spacing_findings() -> None:
    for name in ("rtplan.dcm", "rtstruct.dcm", "test-SR.dcm"):
        assert not _run(name).findings, name
