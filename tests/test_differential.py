"""Offline equals online (issue 13): every file of the real corpus (pydicom's test files and
pydicom-data) and every generated rule case is sent to one running node over real
associations, and ``spacing-scp check --json`` runs on the same files; verdicts, findings,
edits, effective spacing and series summaries must be the same, field by field.

The corpus holds the same SOP Instance in several transfer syntaxes: files are sent in
rounds of unique SOP Instance UIDs and each round is compared before a later round resends
(replaces) one of its instances; a series is compared when all its files are in one round.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian

from scp import status
from tests.conftest import send_files
from tests.dicom_factory import ct_dataset, set_raw, write
from tests.pipeline_builders import (
    CR_IMAGE_STORAGE,
    EXPLICIT_VR_LITTLE_ENDIAN,
    MG_IMAGE_STORAGE,
    MR_IMAGE_STORAGE,
    ct,
    dx,
    encode_dataset,
    enhanced_mr,
    frame,
    pixel_measures,
    sc,
    us,
    us_region,
)
from tests.test_series_api import get
from tests.test_spacing_truth import check_json
from tests.test_store import _storage_corpus

ROOT = "1.2.826.0.1.3680043.8.498.13"
OVERLONG = "0.9765625000000001\\0.9765625000000001"

#: SID 660 mm, SOD 600 mm: ERMF 1.1 (rule 13)
EMRF = "EstimatedRadiographicMagnificationFactor"
MG_ERMF = {EMRF: "1.1", "DistanceSourceToDetector": "660", "DistanceSourceToPatient": "600"}

#: The rulebook's generated cases ("Made by the tests"), one instance each.
CASES: dict[str, dict[str, Any]] = {
    "ct_anisotropic": ct(PixelSpacing="0.5\\0.7", ReconstructionDiameter="358.4"),
    "ct_anisotropic_reversed": ct(PixelSpacing="0.7\\0.5", ReconstructionDiameter="358.4"),
    "ps_vm1": ct(PixelSpacing="0.5"),
    "ps_trailing_backslash": ct(PixelSpacing="0.3\\0.3\\"),
    "ps_three_values": ct(PixelSpacing="0.2\\0\\0.2"),
    "ps_comma": ct(PixelSpacing="0,5\\0,5"),
    "ps_unit": ct(PixelSpacing="0.5mm\\0.5mm"),
    "ps_nan": ct(PixelSpacing="nan\\nan"),
    "ps_overlong": ct(PixelSpacing=OVERLONG),
    "ps_zero": ct(PixelSpacing="0\\0"),
    "ps_padded": ct(PixelSpacing=" 0.5 \\ 0.5 "),
    "ps_midpoint_mixed": ct(PixelSpacing="0.976562\\0.9765625"),
    "ps_as_ut": ct(**{"PixelSpacing:UT": "2.5000\\2.5000"}, PixelSpacing=None),
    "ps_as_lo": ct(**{"PixelSpacing:LO": "0.703\\0.703"}, PixelSpacing=None),
    "st_as_sh": ct(**{"SliceThickness:SH": "1.25"}, SliceThickness=None),
    "dx_ips_only": dx(),
    "dx_ps_equals_ips": dx(PixelSpacing="0.15\\0.15"),
    "dx_ps_differs": dx(PixelSpacing="0.14\\0.14"),
    "dx_geometry_equal": dx(PixelSpacing="0.15\\0.15", PixelSpacingCalibrationType="GEOMETRY"),
    "dx_fiducial_no_description": dx(
        PixelSpacing="0.14\\0.14", PixelSpacingCalibrationType="FIDUCIAL"
    ),
    "cr_zero": dx(SOPClassUID=CR_IMAGE_STORAGE, Modality="CR", PixelSpacing="0.000\\0.000"),
    "mg_ermf_consistent": dx(SOPClassUID=MG_IMAGE_STORAGE, Modality="MG", **MG_ERMF),
    "mg_ermf_inconsistent": dx(
        SOPClassUID=MG_IMAGE_STORAGE, Modality="MG", **{**MG_ERMF, EMRF: "1.3"}
    ),
    "us_regions_differ": us([us_region(0.01, 0.01), us_region(0.02, 0.02)]),
    "us_one_region": us([us_region(0.01, 0.01)]),
    "enhanced_mr_frames_differ": enhanced_mr(
        None, [frame("0.5\\0.5", 0), frame("0.6\\0.6", 1), frame("0.5\\0.5", 2)]
    ),
    "enhanced_mr_frames_precision": enhanced_mr(
        None, [frame("0.976562\\0.976562", 0), frame("0.9765625\\0.9765625", 1)]
    ),
    "enhanced_mr_shared": enhanced_mr(pixel_measures("0.9\\0.9"), [frame(None, 0), frame(None, 1)]),
    "sc_plane_nsps": sc(
        PixelSpacing="0.3\\0.3",
        NominalScannedPixelSpacing="0.3\\0.3",
        ImagePositionPatient="0\\0\\0",
        ImageOrientationPatient="1\\0\\0\\0\\1\\0",
    ),
    "mr_iop_not_unit": ct(
        SOPClassUID=MR_IMAGE_STORAGE, Modality="MR", ImageOrientationPatient="1\\0\\0\\0\\2\\0"
    ),
}


def _generated(folder: Path) -> list[Path]:
    """Each case as a Part 10 file with UIDs of its own (and a three-slice CT series whose
    slices write Pixel Spacing with 6 and 7 decimals)."""
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    specs = dict(CASES)
    for z, ps in enumerate(["0.976562\\0.976562", "0.9765625\\0.9765625", "0.9765625\\0.9765625"]):
        specs[f"series_midpoint_{z}"] = ct(
            PixelSpacing=ps,
            ImagePositionPatient=f"-128\\-128\\{z * 2.5:g}",
            SeriesInstanceUID=f"{ROOT}.900",
            StudyInstanceUID=f"{ROOT}.901",
        )
    for index, (name, spec) in enumerate(sorted(specs.items()), start=1):
        full = {
            "StudyInstanceUID": f"{ROOT}.1.{index}",
            "SeriesInstanceUID": f"{ROOT}.2.{index}",
            **spec,
            "SOPInstanceUID": f"{ROOT}.3.{index}",
        }
        path = folder / f"{name}.dcm"
        path.write_bytes(_part10(full))
        files.append(path)
    # an edit in every transfer syntax the node rewrites (deflate, big endian), and a VR
    # the rulebook does not allow (rule 33), with pixel data
    for index, (ts, vr) in enumerate(
        [
            (DeflatedExplicitVRLittleEndian, "DS"),
            (ExplicitVRBigEndian, "DS"),
            (DeflatedExplicitVRLittleEndian, "UT"),
        ]
    ):
        ds = ct_dataset(pixel_spacing=None, sop=f"{ROOT}.4.{index}")
        set_raw(ds, 0x00280030, vr, OVERLONG.encode() if vr == "DS" else b"2.5000\\2.5000")
        files.append(write(ds, folder / f"pixels_{index}.dcm", ts))
    return files


def _part10(spec: dict[str, Any]) -> bytes:
    """Preamble, File Meta Information (PS3.10 7.1) and the data set as encoded by hand."""
    meta = encode_dataset(
        {
            "FileMetaInformationVersion": b"\x00\x01",
            "MediaStorageSOPClassUID": spec["SOPClassUID"],
            "MediaStorageSOPInstanceUID": spec["SOPInstanceUID"],
            "TransferSyntaxUID": EXPLICIT_VR_LITTLE_ENDIAN,
        }
    )
    length = encode_dataset({"FileMetaInformationGroupLength": [len(meta)]})
    return b"\x00" * 128 + b"DICM" + length + meta + encode_dataset(spec)


def _rounds(files: list[Path]) -> list[list[tuple[Path, str, str]]]:
    rounds: list[list[tuple[Path, str, str]]] = []
    for path in files:
        ds = dcmread(path, stop_before_pixels=True, force=True)
        sop, series = str(ds.SOPInstanceUID), str(ds.SeriesInstanceUID)
        for rnd in rounds:
            if all(s != sop for _, s, _ in rnd):
                rnd.append((path, sop, series))
                break
        else:
            rounds.append([(path, sop, series)])
    return rounds


_INSTANCE_KEYS = ("verdict", "findings", "actions", "pixel_spacing", "received_pixel_spacing")
_SERIES_KEYS = (
    "pixel_spacing",
    "slice_spacing",
    "slice_thickness_mm",
    "spacing_between_slices_mm",
    "stacks",
    "findings",
    "instance_count",
    "corrected_instances",
)


def _ordered(items: list[dict[str, Any]]) -> list[str]:
    return sorted(json.dumps(item, sort_keys=True) for item in items)


def test_node_and_check_agree_on_every_file(
    node_factory: Callable[..., Any], tmp_path: Path
) -> None:
    node = node_factory(series={"quiet_seconds": 0.5})
    corpus, _broken = _storage_corpus()
    files = corpus + _generated(tmp_path / "generated")
    assert len(files) >= 60 + len(CASES)
    rounds = _rounds(files)
    series_rounds: dict[str, set[int]] = defaultdict(set)
    for number, rnd in enumerate(rounds):
        for _, _, series in rnd:
            series_rounds[series].add(number)
    compared_instances = compared_series = 0
    for number, rnd in enumerate(rounds):
        paths = [p for p, _, _ in rnd]
        for res in send_files(node.port, paths):
            assert res.status is not None and status.is_stored(res.status), (
                res.path,
                hex(res.status or 0),
                res.comment,
            )
        offline = check_json(*paths)
        by_path = {Path(item["path"]): item for item in offline["instances"]}
        for path, sop, _ in rnd:
            code, online = get(node, f"/instances/{sop}")
            assert code == 200, online
            mine = by_path[path]
            for key in _INSTANCE_KEYS:
                left, right = online[key], mine[key]
                if key in ("findings", "actions"):
                    left, right = _ordered(left), _ordered(right)
                assert left == right, (path.name, key)
            compared_instances += 1
        time.sleep(0.7)  # every series settled, as check reports them
        for summary in offline["series"]:
            uid = summary["series_instance_uid"]
            if series_rounds[uid] != {number}:
                continue
            code, online = get(node, f"/series/{uid}")
            assert code == 200, online
            for key in _SERIES_KEYS:
                left, right = online[key], summary[key]
                if key == "findings":
                    left, right = _ordered(left), _ordered(right)
                assert left == right, (uid, key)
            compared_series += 1
    assert compared_instances == len(files)
    assert compared_series >= 40
