"""``spacing-scp check``: the pipeline offline, tables, JSON, exit codes and --fix."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from pydicom import dcmread

from scp.pipeline.annotate import read_annotation
from tests.dicom_factory import ct_dataset, set_raw, write


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "scp", "check", *args], capture_output=True, text=True, timeout=120
    )


def test_clean_folder_exits_zero_with_table(tmp_path: Path) -> None:
    for i in range(3):
        write(ct_dataset(position=(0, 0, i * 2.0)), tmp_path / "in" / f"{i}.dcm")
    (tmp_path / "in" / "README.txt").write_text("not DICOM")
    out = run(str(tmp_path / "in"))
    assert out.returncode == 0, out.stderr
    assert "verdict" in out.stdout and "PixelSpacing" in out.stdout
    assert "3 instances, 3 series, 1 non-DICOM files skipped" in out.stdout


def test_invalid_spacing_exits_one_and_json_lists_it(tmp_path: Path) -> None:
    ds = ct_dataset()
    set_raw(ds, 0x00280030, "DS", b"0.5mm\\0.5mm")
    write(ds, tmp_path / "in" / "bad.dcm")
    broken = tmp_path / "in" / "broken.dcm"
    good = write(ct_dataset(), tmp_path / "good.dcm")
    broken.write_bytes(good.read_bytes()[:-200])
    out = run("--json", str(tmp_path / "in"))
    assert out.returncode == 1
    report = json.loads(out.stdout)
    by_name = {Path(i["path"]).name: i for i in report["instances"]}
    assert by_name["bad.dcm"]["verdict"] == "invalid"
    assert "PIXEL_SPACING_INVALID" in {f["code"] for f in by_name["bad.dcm"]["findings"]}
    assert by_name["broken.dcm"]["findings"][0]["code"] == "FILE_UNREADABLE"
    assert set(report) >= {"instances", "series"}


def test_fix_writes_corrected_annotated_copies(tmp_path: Path) -> None:
    config = tmp_path / "site.toml"
    config.write_text(
        '[[swap_rules]]\nname = "ACME CT writes column first"\n'
        '[swap_rules.match]\nManufacturer = "ACME"\n'
    )
    src = write(
        ct_dataset(pixel_spacing="0.7\\0.5", rows=16, columns=16), tmp_path / "in" / "a" / "x.dcm"
    )
    out = run("--config", str(config), "--fix", str(tmp_path / "out"), str(tmp_path / "in"))
    assert out.returncode == 0, out.stderr
    fixed = dcmread(tmp_path / "out" / "a" / "x.dcm")
    assert [float(v) for v in fixed.PixelSpacing] == [0.5, 0.7]
    assert fixed.OriginalAttributesSequence[0].ReasonForTheAttributeModification == "CORRECT"
    assert (fixed.pixel_array == dcmread(src).pixel_array).all()
    block = read_annotation(fixed, "SPACING_SCP")
    assert block and "corrected" in {str(v) for v in block.values()}
    assert dcmread(src).PixelSpacing[0] == 0.7  # the input is never touched


def test_missing_path_is_a_usage_error(tmp_path: Path) -> None:
    out = run(str(tmp_path / "nope"))
    assert out.returncode == 2 and "no such file" in out.stderr
