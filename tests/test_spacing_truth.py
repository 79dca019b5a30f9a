"""Issue 13, spacing truth II: values compared to the precision they were written with
(rulebook rules 31-33), offline equals online, every transfer syntax rewritten.

Real parts: files written by pydicom, a running node on a free port, real associations,
``spacing-scp check --json`` in a subprocess.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    MRImageStorage,
)

from scp import status
from scp.pipeline import run_pipeline
from scp.pipeline.compare import MATCH_RTOL, agree, reversed_pair, same_pair
from scp.pipeline.ds import DSNumber
from scp.pipeline.model import InstanceContext
from scp.pipeline.policy import SpacingPolicy
from scp.series import SeriesState, slices_from_dataset, summarize_series
from scp.services.series_query import spacing_consensus
from tests.conftest import send_files
from tests.dicom_factory import ct_dataset, set_raw, write
from tests.series_builders import regular, write_series
from tests.test_find import c_find, identifier
from tests.test_series_api import get

PS_TAG = 0x00280030
OVERLONG = "0.9765625000000001\\0.9765625000000001"  # 18 bytes per value: over the DS limit

# (less precise, more precise): midpoint spacings (500/512, 250/512, 180/512, 400/512)
# written with 6 decimals, and a writer that keeps 3.
MIXED = [
    ("0.976562", "0.9765625"),
    ("0.488281", "0.48828125"),
    ("0.351562", "0.3515625"),
    ("0.78125", "0.781250"),
    ("0.703", "0.703125"),
    ("9.765625e-01", "0.976562"),
]


def _d(text: str) -> DSNumber:
    return DSNumber(text)


# ------------------------------------------------------------------ rule 31: the comparison


@pytest.mark.parametrize(("coarse", "fine"), MIXED)
def test_values_agree_to_the_precision_of_the_less_precise(coarse: str, fine: str) -> None:
    assert agree(_d(coarse), _d(fine), rtol=0.0)
    assert agree(_d(fine), _d(coarse), rtol=0.0)


def test_values_that_differ_within_their_precision_do_not_agree() -> None:
    assert not agree(_d("0.703"), _d("0.705"), rtol=0.0)
    assert not agree(_d("0.976562"), _d("0.9765640"), rtol=0.0)
    # the named relative tolerance covers writers that truncate
    assert agree(_d("0.976562"), _d("0.9765629"), rtol=MATCH_RTOL)
    # never bucketing: 0.9765625 sits on a rounding midpoint (round() gives 0.976562 or
    # 0.976563 depending on the float), the comparison works on the decimal text
    assert agree(_d("0.976563"), _d("0.9765625"), rtol=0.0)
    # a binary number (unknown precision) takes the DS value's precision
    assert agree(0.9765625, _d("0.976562"), rtol=0.0)
    assert not agree(0.9765625, 0.976562, rtol=0.0)


@pytest.mark.parametrize(("coarse", "fine"), MIXED)
def test_reversal_needs_anisotropy(coarse: str, fine: str) -> None:
    # rule 32: an isotropic pair written with two precisions is never "reversed"
    p, q = (_d(coarse), _d(fine)), (_d(fine), _d(coarse))
    assert same_pair(p, q, rtol=0.0)
    assert not reversed_pair(p, q)
    assert reversed_pair((_d("0.5"), _d("0.7")), (_d("0.7"), _d("0.5")))


def test_instance_with_isotropic_mixed_precision_is_not_suspect() -> None:
    def extra(ds: Dataset) -> None:
        ds.ImagerPixelSpacing = ["0.9765625", "0.976562"]

    ds = ct_dataset(pixel_spacing="0.976562\\0.9765625", extra=extra)
    result = run_pipeline(ds, InstanceContext(), SpacingPolicy())
    assert "PIXEL_SPACING_SUSPECT_REVERSED" not in {f.code for f in result.findings}


# ------------------------------------------------------------------ series consensus


def _series_files(folder: Path, coarse: str, fine: str) -> tuple[str, list[Path]]:
    return write_series(
        folder,
        regular(3, 2.5),
        pixel_spacing=[f"{coarse}\\{coarse}", f"{fine}\\{fine}", f"{fine}\\{fine}"],
    )


def _codes(findings: Any) -> set[str]:
    return {f["code"] if isinstance(f, dict) else f.code for f in findings}


@pytest.mark.parametrize(("coarse", "fine"), MIXED)
def test_series_of_mixed_precision_is_consistent(tmp_path: Path, coarse: str, fine: str) -> None:
    _, files = _series_files(tmp_path, coarse, fine)
    slices = [g for f in files for g in slices_from_dataset(dcmread(f))]
    geometry = summarize_series(slices)
    assert geometry.pixel_spacing_consistent
    assert "SERIES_PIXEL_SPACING_INCONSISTENT" not in _codes(geometry.to_dict()["findings"])
    # through the persisted JSON (series.geometry_state), as the index keeps it
    state = SeriesState.from_slices(slices)
    again = SeriesState.from_json(state.to_json()).summary()
    assert again.pixel_spacing_consistent and again.pixel_spacing == geometry.pixel_spacing
    most_precise = max((coarse, fine), key=lambda t: _d(t).decimals)
    assert geometry.pixel_spacing == (float(most_precise), float(most_precise))


def test_index_consensus_merges_groups_that_agree() -> None:
    # what storage.queries.series_aggregates returns: exact value, decimals, source, count
    consensus, consistent = spacing_consensus(
        [
            (0.976562, 0.976562, 6, 6, "PixelSpacing", 1),
            (0.9765625, 0.9765625, 7, 7, "PixelSpacing", 2),
        ]
    )
    assert consistent and consensus == (0.9765625, 0.9765625, "PixelSpacing")
    # without the decimals (rows indexed before revision 0003) only the tolerance applies
    _, consistent = spacing_consensus(
        [(0.703, 0.703, None, None, "PixelSpacing", 1), (0.703125, 0.703125, 3, 3, "X", 1)]
    )
    assert consistent
    _, consistent = spacing_consensus(
        [(0.5, 0.5, 1, 1, "PixelSpacing", 1), (0.7, 0.7, 1, 1, "PixelSpacing", 1)]
    )
    assert not consistent


# ------------------------------------------------------------------ over the network


def check_json(*paths: Path) -> dict[str, Any]:
    """``spacing-scp check --json`` on ``paths``, parsed (exit 0, or 1 for an invalid one)."""
    out = subprocess.run(
        [sys.executable, "-m", "scp", "check", "--json", *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode in (0, 1), out.stderr  # 1: an instance is invalid
    return json.loads(out.stdout)  # type: ignore[no-any-return]


@pytest.fixture
def quiet_node(node_factory: Callable[..., Any]) -> Any:
    return node_factory(series={"quiet_seconds": 1.0})


def test_mixed_precision_series_end_to_end(quiet_node: Any, tmp_path: Path) -> None:
    node = quiet_node
    uid, files = _series_files(tmp_path / "in", "0.976562", "0.9765625")
    results = send_files(node.port, files)
    assert all(r.status is not None and status.is_stored(r.status) for r in results), results
    time.sleep(1.2)
    code, online = get(node, f"/series/{uid}")
    assert code == 200, online
    assert online["pixel_spacing"]["consistent"] is True
    assert online["pixel_spacing"]["row_mm"] == 0.9765625
    assert "SERIES_PIXEL_SPACING_INCONSISTENT" not in _codes(online["findings"])
    assert online["slice_spacing"]["mm"] == 2.5

    query = identifier(
        "SERIES",
        StudyInstanceUID=online["study_instance_uid"],
        SeriesInstanceUID=uid,
        PixelSpacing="",
    )
    result = c_find(node.port, query)
    [answer] = result.identifiers
    assert [str(v) for v in answer.PixelSpacing] == ["0.9765625", "0.9765625"]

    [offline] = check_json(tmp_path / "in")["series"]
    for key in ("pixel_spacing", "slice_spacing", "findings", "stacks"):
        assert offline[key] == online[key], key


def _instance_row(node: Any, sop: str) -> dict[str, Any]:
    code, body = get(node, f"/instances/{sop}")
    assert code == 200, body
    return body  # type: ignore[no-any-return]


def _stored(node: Any, ds: Dataset) -> Path:
    return (
        node.store.instances
        / ds.StudyInstanceUID
        / ds.SeriesInstanceUID
        / (ds.SOPInstanceUID + ".dcm")
    )


def _same_verdict(online: dict[str, Any], offline: dict[str, Any]) -> None:
    assert online["verdict"] == offline["verdict"]
    for key in ("findings", "actions"):
        strip = [
            {k: v for k, v in item.items() if k in ("code", "severity", "old", "new")}
            for item in online[key]
        ]
        mine = [
            {k: v for k, v in item.items() if k in ("code", "severity", "old", "new")}
            for item in offline[key]
        ]
        assert sorted(map(str, strip)) == sorted(map(str, mine)), key


@pytest.mark.parametrize(
    "ts", [DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian, ExplicitVRLittleEndian]
)
def test_overlong_ds_is_reformatted_in_every_transfer_syntax(
    node: Any, tmp_path: Path, ts: str
) -> None:
    ds = ct_dataset(pixel_spacing=None, rows=16, columns=16)
    set_raw(ds, PS_TAG, "DS", OVERLONG.encode())
    src = write(ds, tmp_path / "ct.dcm", ts)
    [res] = send_files(node.port, [src])
    assert res.status == status.WARNING_COERCION_OF_DATA_ELEMENTS, res

    stored = dcmread(_stored(node, ds))
    sent = dcmread(src)
    assert stored.file_meta.TransferSyntaxUID == ts
    assert [str(v) for v in stored.PixelSpacing] == ["0.9765625", "0.9765625"]
    assert (stored.pixel_array == sent.pixel_array).all()
    [record] = stored.OriginalAttributesSequence
    assert record.ReasonForTheAttributeModification == "COERCE"
    [nonconforming] = record.NonconformingModifiedAttributesSequence
    assert nonconforming.NonconformingDataElementValue.rstrip(b" ") == OVERLONG.encode()

    online = _instance_row(node, ds.SOPInstanceUID)
    [offline] = check_json(src)["instances"]
    _same_verdict(online, offline)
    assert online["verdict"] == "corrected"
    assert [f["code"] for f in online["findings"]].count("PIXEL_SPACING_REFORMATTED") == 1
    if shutil.which("dcmdump"):
        dump = subprocess.run(
            ["dcmdump", "-q", str(_stored(node, ds))], capture_output=True, text=True, timeout=60
        )
        assert dump.returncode == 0 and "0.9765625\\0.9765625" in dump.stdout, dump.stderr


def test_deflated_rewrite_streams_a_large_instance(tmp_path: Path) -> None:
    # 16 MB of pixel data: the rewrite inflates and deflates in 1 MiB pieces
    import numpy as np

    from scp.pipeline.model import Edit, PipelineResult
    from scp.services.decisions import rewrite
    from storage.part10 import read_received, write_part10

    ds = ct_dataset(pixel_spacing="0.5\\0.5", rows=2048, columns=4096)
    ds.PixelData = np.random.default_rng(1).integers(0, 4096, 2048 * 4096, np.uint16).tobytes()
    src = write(ds, tmp_path / "big.dcm", DeflatedExplicitVRLittleEndian)
    received = read_received(src)
    assert received.pixel_offset is not None
    result = PipelineResult()
    result.edits.append(Edit("PS_TEST", "COERCE", ("PixelSpacing",), "0.5\\0.5", "0.5\\0.6"))
    header = rewrite(received, result, "AE")
    assert header is not None
    out = tmp_path / "out.dcm"
    with open(out, "wb") as fh:
        write_part10(fh, received.file_meta, received, header)
    back = dcmread(out)
    assert [str(v) for v in back.PixelSpacing] == ["0.5", "0.6"]
    assert back.PixelData == ds.PixelData


# ------------------------------------------------------------------ rule 33: wrong VR


def _mr_with_vr(vr: str, value: bytes = b"2.5000\\2.5000") -> Dataset:
    ds = ct_dataset(pixel_spacing=None, modality="MR", sop_class=MRImageStorage)
    set_raw(ds, PS_TAG, vr, value)
    return ds


@pytest.mark.parametrize("vr", ["UT", "LO", "SH", "ST", "LT", "CS"])
def test_wrong_vr_is_reported_and_coerced(tmp_path: Path, vr: str) -> None:
    src = write(_mr_with_vr(vr), tmp_path / "mr.dcm")
    [item] = check_json(src)["instances"]
    [finding] = [f for f in item["findings"] if f["code"] == "SPACING_VR_WRONG"]
    assert finding["severity"] == "warning" and f"VR {vr}" in finding["message"]
    assert "DS" in finding["message"] and finding["tag"] == "(0028,0030)"
    [action] = item["actions"]
    assert action["code"] == "SPACING_VR_WRONG" and action["new"] == "2.5000\\2.5000"
    assert item["pixel_spacing"]["row_mm"] == 2.5


def test_wrong_vr_unclear_value_is_kept(tmp_path: Path) -> None:
    src = write(_mr_with_vr("LO", b"2.5mm\\2.5mm"), tmp_path / "mr.dcm")
    [item] = check_json(src)["instances"]
    assert "SPACING_VR_WRONG" in _codes(item["findings"])
    assert not [a for a in item["actions"] if a["code"] == "SPACING_VR_WRONG"]


def test_wrong_vr_over_the_network(node: Any, tmp_path: Path) -> None:
    ds = _mr_with_vr("UT")
    src = write(ds, tmp_path / "mr.dcm", ExplicitVRLittleEndian)
    [res] = send_files(node.port, [src])
    assert res.status == status.WARNING_COERCION_OF_DATA_ELEMENTS, res
    stored = dcmread(_stored(node, ds))
    assert stored[PS_TAG].VR == "DS"
    assert [str(v) for v in stored.PixelSpacing] == ["2.5000", "2.5000"]
    [record] = stored.OriginalAttributesSequence
    [nonconforming] = record.NonconformingModifiedAttributesSequence
    assert nonconforming.SelectorAttribute == PS_TAG
    assert nonconforming.NonconformingDataElementValue == b"2.5000\\2.5000 "[:14]
    online = _instance_row(node, ds.SOPInstanceUID)
    [offline] = check_json(src)["instances"]
    _same_verdict(online, offline)
    assert "SPACING_VR_WRONG" in _codes(online["findings"])


# ------------------------------------------------------------------ NM: geometry in a sequence


def _nm_tomo(frames: int = 6, sbs: str = "4.41806", st: str = "4.41806") -> Dataset:
    def extra(ds: Dataset) -> None:
        del ds.ImagePositionPatient, ds.ImageOrientationPatient, ds.SliceThickness
        detector = Dataset()
        detector.ImagePositionPatient = ["-280", "-280", "-100"]
        detector.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
        ds.DetectorInformationSequence = [detector]
        ds.NumberOfFrames = frames
        ds.SpacingBetweenSlices = sbs
        ds.SliceThickness = st
        ds.ImageType = ["ORIGINAL", "PRIMARY", "RECON TOMO", "EMISSION"]
        ds.PixelData = b"\0\0" * 16 * 16 * frames

    return ct_dataset(
        modality="NM",
        sop_class="1.2.840.10008.5.1.4.1.1.20",
        pixel_spacing="4.41806\\4.41806",
        extra=extra,
    )


def test_nm_geometry_from_the_detector_information_sequence() -> None:
    slices = slices_from_dataset(_nm_tomo())
    assert [g.frame_number for g in slices] == [1, 2, 3, 4, 5, 6]
    summary = summarize_series(slices).to_dict()
    [stack] = summary["stacks"]
    assert stack["slice_thickness_mm"] == 4.41806
    assert stack["spacing_between_slices_mm"] == 4.41806
    assert stack["slice_spacing"]["mm"] == pytest.approx(4.41806, abs=1e-3)  # positions in µm


def test_nm_series_summary_over_the_network(quiet_node: Any, tmp_path: Path) -> None:
    ds = _nm_tomo()
    src = write(ds, tmp_path / "nm.dcm")
    [res] = send_files(quiet_node.port, [src])
    assert res.status is not None and status.is_stored(res.status), res
    time.sleep(1.2)  # settled, like check's answer
    node = quiet_node
    code, online = get(node, f"/series/{ds.SeriesInstanceUID}")
    assert code == 200, online
    assert online["slice_thickness_mm"] == 4.41806
    assert online["spacing_between_slices_mm"] == 4.41806
    [offline] = check_json(src)["series"]
    for key in ("slice_thickness_mm", "spacing_between_slices_mm", "slice_spacing", "stacks"):
        assert offline[key] == online[key], key


def test_migration_0003_fills_the_decimals_of_indexed_rows(node: Any, tmp_path: Path) -> None:
    from alembic import command
    from sqlalchemy import select

    from storage.db import alembic_config
    from storage.models import Instance

    _, files = _series_files(tmp_path / "in", "0.976562", "0.9765625")
    send_files(node.port, files)
    engine = node.sessions.kw["bind"]
    with node.sessions() as s:
        before = sorted(
            (i.pixel_spacing_row_decimals, i.pixel_spacing_column_decimals)
            for i in s.scalars(select(Instance))
        )
    assert before == [(6, 6), (7, 7), (7, 7)]
    command.downgrade(alembic_config(engine), "0002")
    command.upgrade(alembic_config(engine), "0003")
    with node.sessions() as s:
        after = sorted(
            (i.pixel_spacing_row_decimals, i.pixel_spacing_column_decimals)
            for i in s.scalars(select(Instance))
        )
    assert after == before


def test_pixel_aspect_ratio_with_a_wrong_vr(tmp_path: Path) -> None:
    ds = ct_dataset(modality="MR", sop_class=MRImageStorage)
    set_raw(ds, 0x00280034, "LO", b"1\\1")
    [item] = check_json(write(ds, tmp_path / "par.dcm"))["instances"]
    [finding] = [f for f in item["findings"] if f["code"] == "SPACING_VR_WRONG"]
    assert "VR LO, not IS" in finding["message"] and finding["tag"] == "(0028,0034)"
    [action] = [a for a in item["actions"] if a["code"] == "SPACING_VR_WRONG"]
    assert action["attribute"] == "PixelAspectRatio" and action["new"] == "1\\1"
