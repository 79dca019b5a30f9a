"""Issue 3 end to end: spacing checks, perimeter swaps and their record, over real associations."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from sqlalchemy import select

from scp import status
from scp.pipeline.policy import SwapRule
from storage.models import Instance
from tests.conftest import REQUIRE_DCMTK, dataset_bytes, make_config, send_files
from tests.dicom_factory import ct_dataset, set_raw, write

CR3_RULE = SwapRule(
    name="CR room 3 writes column spacing first",
    attributes=("PixelSpacing",),
    match={"Manufacturer": "ACME*", "calling_ae_title": "CR3"},
)


def _stored(node: Any, src: Path) -> Path:
    ds = dcmread(src, stop_before_pixels=True, force=True)
    return (
        node.store.instances
        / ds.StudyInstanceUID
        / ds.SeriesInstanceUID
        / (ds.SOPInstanceUID + ".dcm")
    )


def _swap_node(node_factory: Callable[..., Any], tmp_path: Path, **policy: Any) -> Any:
    cfg = make_config(tmp_path / "swapdata", policy=policy)
    cfg.swap_rules = [CR3_RULE]
    return node_factory(cfg)


def _instance(node: Any, sop: str) -> Instance:
    with node.sessions() as s:
        inst = s.scalar(select(Instance).where(Instance.sop_instance_uid == sop))
        assert inst is not None
        _ = inst.findings, inst.actions
        return inst


def test_swap_rule_corrects_records_and_keeps_original(
    node_factory: Callable[..., Any], tmp_path: Path
) -> None:
    node = _swap_node(node_factory, tmp_path)
    src = write(ct_dataset(pixel_spacing="0.7\\0.5", rows=32, columns=32), tmp_path / "cr.dcm")
    [res] = send_files(node.port, [src], ae_title="CR3")
    assert res.status == status.WARNING_COERCION_OF_DATA_ELEMENTS

    out = dcmread(_stored(node, src))
    sent = dcmread(src)
    assert [float(v) for v in out.PixelSpacing] == [0.5, 0.7]
    assert out.SOPInstanceUID == sent.SOPInstanceUID
    assert "InstanceCoercionDateTime" in out
    [item] = out.OriginalAttributesSequence
    assert item.ModifyingSystem == "SPACING_SCP"
    assert item.ReasonForTheAttributeModification == "CORRECT"
    assert [float(v) for v in item.ModifiedAttributesSequence[0].PixelSpacing] == [0.7, 0.5]
    assert (out.pixel_array == sent.pixel_array).all()

    original = node.store.originals / _stored(node, src).relative_to(node.store.instances)
    assert dataset_bytes(original) == dataset_bytes(src)
    # the original is the received file itself, renamed into originals/ (issue 14)
    original_meta = dcmread(original, stop_before_pixels=True).file_meta
    assert original_meta.SourceApplicationEntityTitle == "CR3"

    inst = _instance(node, sent.SOPInstanceUID)
    assert inst.received_pixel_spacing == "0.7\\0.5"
    assert (inst.pixel_spacing_row_mm, inst.pixel_spacing_column_mm) == (0.5, 0.7)
    assert inst.verdict == "corrected"
    assert inst.status == status.WARNING_COERCION_OF_DATA_ELEMENTS
    assert [(a.code, a.attribute, a.old, a.new) for a in inst.actions] == [
        ("PIXEL_SPACING_SWAPPED", "PixelSpacing", "0.7\\0.5", "0.5\\0.7")
    ]
    assert "PIXEL_SPACING_SWAPPED" in {f.code for f in inst.findings}


def test_other_sender_is_not_swapped(node_factory: Callable[..., Any], tmp_path: Path) -> None:
    node = _swap_node(node_factory, tmp_path)
    src = write(ct_dataset(pixel_spacing="0.7\\0.5"), tmp_path / "ct.dcm")
    [res] = send_files(node.port, [src], ae_title="CT1")
    assert res.status == status.SUCCESS
    assert dataset_bytes(_stored(node, src)) == dataset_bytes(src)


def test_resending_the_corrected_copy_does_not_swap_it_back(
    node_factory: Callable[..., Any], tmp_path: Path
) -> None:
    node = _swap_node(node_factory, tmp_path)
    src = write(ct_dataset(pixel_spacing="0.7\\0.5"), tmp_path / "cr.dcm")
    assert send_files(node.port, [src], ae_title="CR3")[0].status == 0xB000
    corrected = tmp_path / "corrected.dcm"
    corrected.write_bytes(_stored(node, src).read_bytes())
    [res] = send_files(node.port, [corrected], ae_title="CR3")
    assert res.status == status.SUCCESS
    out = dcmread(_stored(node, src))
    assert [float(v) for v in out.PixelSpacing] == [0.5, 0.7]
    inst = _instance(node, out.SOPInstanceUID)
    assert "ALREADY_CORRECTED" in {f.code for f in inst.findings}
    # the modality's original bytes stay kept, and the instance stays recorded as corrected
    original = node.store.originals / _stored(node, src).relative_to(node.store.instances)
    assert dataset_bytes(original) == dataset_bytes(src)
    assert inst.original_path is not None
    assert [(a.code, a.old, a.new) for a in inst.actions] == [
        ("PIXEL_SPACING_SWAPPED", "0.7\\0.5", "0.5\\0.7")
    ]
    # a resend of the modality's original is corrected again, as the first time
    assert send_files(node.port, [src], ae_title="CR3")[0].status == 0xB000
    assert dataset_bytes(original) == dataset_bytes(src)
    assert len(_instance(node, out.SOPInstanceUID).actions) == 1


def test_coercion_status_success_policy(node_factory: Callable[..., Any], tmp_path: Path) -> None:
    node = _swap_node(node_factory, tmp_path, coercion_status="success")
    src = write(ct_dataset(pixel_spacing="0.7\\0.5"), tmp_path / "cr.dcm")
    assert send_files(node.port, [src], ae_title="CR3")[0].status == status.SUCCESS
    assert [float(v) for v in dcmread(_stored(node, src)).PixelSpacing] == [0.5, 0.7]


def test_overlong_ds_is_reformatted_with_coerce(node: Any, tmp_path: Path) -> None:
    ds = ct_dataset()
    set_raw(ds, 0x00280030, "DS", b"0.48828125000000001\\0.48828125")
    src = write(ds, tmp_path / "long.dcm")
    [res] = send_files(node.port, [src])
    assert res.status == status.WARNING_COERCION_OF_DATA_ELEMENTS
    out = dcmread(_stored(node, src))
    raw = out.get_item(0x00280030).value
    assert all(len(v.strip()) <= 16 for v in raw.decode().split("\\"))
    assert out.OriginalAttributesSequence[0].ReasonForTheAttributeModification == "COERCE"


def test_invalid_spacing_is_stored_and_flagged_by_default(node: Any, tmp_path: Path) -> None:
    ds = ct_dataset()
    set_raw(ds, 0x00280030, "DS", b"0\\0")
    src = write(ds, tmp_path / "zero.dcm")
    [res] = send_files(node.port, [src])
    assert res.status == status.SUCCESS
    inst = _instance(node, ds.SOPInstanceUID)
    assert inst.verdict == "invalid"
    assert inst.pixel_spacing_row_mm is None  # never defaulted to 1.0 (rule 5)
    assert "PIXEL_SPACING_INVALID" in {f.code for f in inst.findings}


@pytest.mark.parametrize("bad", [b"0.5mm\\0.5mm", b"nan\\nan", b"0,5\\0,5"])
def test_reject_policy_answers_a900_and_stores_nothing(
    node_factory: Callable[..., Any], tmp_path: Path, bad: bytes
) -> None:
    node = node_factory(policy={"on_invalid_spacing": "reject"})
    ds = ct_dataset()
    set_raw(ds, 0x00280030, "DS", bad)
    src = write(ds, tmp_path / "bad.dcm")
    [res] = send_files(node.port, [src])
    assert res.status == status.ERROR_DATASET_DOES_NOT_MATCH_SOP_CLASS
    assert res.comment and "PIXEL_SPACING_INVALID" in res.comment
    assert not _stored(node, src).exists()


@pytest.mark.dcmtk
def test_dciodvfy_finds_no_new_error_in_the_rewritten_file(
    node_factory: Callable[..., Any], tmp_path: Path
) -> None:
    dciodvfy = dcmtk_tool_dciodvfy()
    node = _swap_node(node_factory, tmp_path)
    src = write(ct_dataset(pixel_spacing="0.7\\0.5", rows=32, columns=32), tmp_path / "cr.dcm")
    assert send_files(node.port, [src], ae_title="CR3")[0].status == 0xB000

    def errors(path: Path) -> set[str]:
        out = subprocess.run([dciodvfy, str(path)], capture_output=True, text=True, timeout=60)
        return {
            line.strip()
            for line in (out.stdout + out.stderr).splitlines()
            if line.startswith("Error")
        }

    assert errors(_stored(node, src)) - errors(src) == set()


def dcmtk_tool_dciodvfy() -> str:
    found = shutil.which("dciodvfy")
    if found:
        return found
    if REQUIRE_DCMTK:
        pytest.fail("dciodvfy (Debian package dicom3tools) is required in CI")
    pytest.skip("dciodvfy is not installed")
