"""Issue 4: per-series spacing received over real associations, read through the HTTP API."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from scp import status
from tests.conftest import send_files
from tests.series_builders import (
    MR,
    SAGITTAL,
    regular,
    tilted_iop,
    write_enhanced_mr,
    write_series,
)


def get(node: Any, path: str, token: str | None = None) -> tuple[int, Any]:
    req = urllib.request.Request(f"http://127.0.0.1:{node.api.port}{path}")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=30) as rsp:
            body = rsp.read().decode()
            ctype = rsp.headers.get("Content-Type", "")
            return rsp.status, json.loads(body) if "json" in ctype else body
    except urllib.error.HTTPError as exc:
        body = exc.read().decode()
        assert exc.headers.get("Content-Type") == "application/problem+json"
        return exc.code, json.loads(body)


def send_series(node: Any, files: list[Path]) -> None:
    results = send_files(node.port, files)
    assert all(r.status is not None and status.is_stored(r.status) for r in results), results


def series(node: Any, uid: str) -> dict[str, Any]:
    code, body = get(node, f"/series/{uid}")
    assert code == 200, body
    return body  # type: ignore[no-any-return]


def codes(s: dict[str, Any]) -> set[str]:
    return {f["code"] for f in s["findings"]}


@pytest.fixture
def quiet_node(node_factory: Callable[..., Any]) -> Any:
    return node_factory(series={"quiet_seconds": 1.0})


def test_regular_ct_shuffled_instance_numbers(node: Any, tmp_path: Path) -> None:
    uid, files = write_series(tmp_path, regular(30))
    send_series(node, files)
    s = series(node, uid)
    assert s["instance_count"] == 30
    assert s["state"] == "receiving"
    z = s["slice_spacing"]
    assert z["mm"] == pytest.approx(1.25) and z["uniform"] is True
    assert z["missing_slices"] == 0 and z["min_mm"] == z["max_mm"] == pytest.approx(1.25)
    assert s["pixel_spacing"] == {
        "row_mm": 0.7,
        "column_mm": 0.5,
        "source": "PixelSpacing",
        "consistent": True,
    }
    assert s["slice_thickness_mm"] == 1.0
    assert "SLICE_THICKNESS_DIFFERS" in codes(s)  # 1 mm slices every 1.25 mm (rule 29: info)


def test_missing_slice_is_provisional_until_settled(quiet_node: Any, tmp_path: Path) -> None:
    positions = regular(20)
    del positions[7]
    uid, files = write_series(tmp_path, positions)
    send_series(quiet_node, files)
    s = series(quiet_node, uid)
    assert s["slice_spacing"]["missing_slices"] == 1
    assert s["slice_spacing"]["provisional"] is True
    assert "SLICE_MISSING" in codes(s)
    time.sleep(1.2)
    s = series(quiet_node, uid)
    assert s["state"] == "settled" and s["slice_spacing"]["provisional"] is False
    assert s["slice_spacing"]["missing_slices"] == 1
    _, page = get(quiet_node, "/series?state=settled&code=SLICE_MISSING")
    assert [i["series_instance_uid"] for i in page["items"]] == [uid]


def test_duplicate_position(node: Any, tmp_path: Path) -> None:
    positions = regular(10)
    positions.append(positions[4])
    uid, files = write_series(tmp_path, positions)
    send_series(node, files)
    s = series(node, uid)
    assert "SLICE_DUPLICATE_POSITION" in codes(s)
    assert s["slice_spacing"]["mm"] is None  # Z undefined unless a clean 4D repeat (rule 27)


def test_clean_4d_repeat(node: Any, tmp_path: Path) -> None:
    uid, files = write_series(tmp_path, regular(10) * 3)
    send_series(node, files)
    s = series(node, uid)
    assert s["slice_spacing"]["mm"] == pytest.approx(1.25)
    assert s["slice_spacing"]["repeats"] == 3


def test_variable_spacing(node: Any, tmp_path: Path) -> None:
    positions = [0.0, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 10.0, 12.0]
    uid, files = write_series(tmp_path, positions)
    send_series(node, files)
    s = series(node, uid)
    assert "SLICE_SPACING_NONUNIFORM" in codes(s)
    assert s["slice_spacing"]["uniform"] is False


def test_gantry_tilt(node: Any, tmp_path: Path) -> None:
    uid, files = write_series(
        tmp_path, regular(12, 2.0), iop=tilted_iop(20.0), stacking=(0.0, 0.0, 1.0)
    )
    send_series(node, files)
    s = series(node, uid)
    assert "SLICE_TILT" in codes(s)
    assert s["slice_spacing"]["tilt_degrees"] == pytest.approx(20.0, abs=0.1)
    # Z is reported along the normal: 2 mm x cos(20 deg)
    assert s["slice_spacing"]["mm"] == pytest.approx(2.0 * 0.9396926, abs=2e-3)


@pytest.mark.parametrize(
    "iop",
    [SAGITTAL, (0.8660254, 0.5, 0.0, -0.3535534, 0.6123724, -0.7071068)],
    ids=["sagittal", "oblique"],
)
def test_mr_stacks(node: Any, tmp_path: Path, iop: tuple[float, ...]) -> None:
    uid, files = write_series(
        tmp_path, regular(16, 3.3), iop=iop, modality="MR", sop_class=MR, pixel_spacing="0.9\\0.9"
    )
    send_series(node, files)
    s = series(node, uid)
    assert s["slice_spacing"]["mm"] == pytest.approx(3.3, abs=2e-3)
    assert s["slice_spacing"]["uniform"] is True
    assert "SLICE_TILT" not in codes(s)


def test_sbs_disagrees(node: Any, tmp_path: Path) -> None:
    uid, files = write_series(tmp_path, regular(10), sbs="2.5")
    send_series(node, files)
    s = series(node, uid)
    assert "SPACING_BETWEEN_SLICES_MISMATCH" in codes(s)
    assert s["spacing_between_slices_mm"] == 2.5


def test_single_slice_has_no_z(node: Any, tmp_path: Path) -> None:
    uid, files = write_series(tmp_path, [0.0])
    send_series(node, files)
    s = series(node, uid)
    assert s["slice_spacing"]["mm"] is None  # undefined, never 1.0 (rule 29)


def test_one_reversed_instance_among_many(node: Any, tmp_path: Path) -> None:
    spacings = ["0.7\\0.5"] * 9 + ["0.5\\0.7"]
    uid, files = write_series(tmp_path, regular(10), pixel_spacing=spacings)
    send_series(node, files)
    s = series(node, uid)
    assert s["pixel_spacing"]["consistent"] is False
    assert (s["pixel_spacing"]["row_mm"], s["pixel_spacing"]["column_mm"]) == (0.7, 0.5)
    assert "SERIES_PIXEL_SPACING_INCONSISTENT" in codes(s)


def test_enhanced_mr_frames_are_a_stack(node: Any, tmp_path: Path) -> None:
    uid, path = write_enhanced_mr(tmp_path / "emr.dcm", frames=12, gap=1.2)
    send_series(node, [path])
    s = series(node, uid)
    assert s["instance_count"] == 1
    assert s["slice_spacing"]["mm"] == pytest.approx(1.2)
    assert s["pixel_spacing"]["source"] == "PixelMeasuresSequence"


def _comparable(s: dict[str, Any]) -> dict[str, Any]:
    return {
        k: v
        for k, v in s.items()
        if k not in {"last_received_at", "series_instance_uid", "study_instance_uid"}
    }


def test_interleaved_halves_from_two_associations_match_one(
    node_factory: Callable[..., Any], tmp_path: Path
) -> None:
    positions = regular(40)
    del positions[20]
    uid, files = write_series(tmp_path / "a", positions, seed=5)
    one = node_factory()
    send_series(one, files)
    expected = series(one, uid)

    two = node_factory()
    halves = [files[0::2], files[1::2]]
    threads = [threading.Thread(target=send_series, args=(two, h)) for h in halves]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    got = series(two, uid)
    assert got["instance_count"] == 39
    assert _comparable(got) == _comparable(expected)


def test_api_lists_pages_filters_and_problems(node: Any, tmp_path: Path) -> None:
    uids = []
    for i in range(5):
        uid, files = write_series(
            tmp_path / f"s{i}",
            regular(3),
            seed=i,
            modality="MR" if i % 2 else "CT",
            sop_class=MR if i % 2 else "1.2.840.10008.5.1.4.1.1.2",
        )
        send_series(node, files)
        uids.append(uid)
    seen: list[str] = []
    cursor = None
    while True:
        path = "/series?limit=2" + (f"&cursor={cursor}" if cursor else "")
        code, page = get(node, path)
        assert code == 200
        seen += [s["series_instance_uid"] for s in page["items"]]
        cursor = page["next"]
        if cursor is None:
            break
    assert sorted(seen) == sorted(uids) and len(seen) == 5
    _, mr = get(node, "/series?modality=MR")
    assert {s["modality"] for s in mr["items"]} == {"MR"} and len(mr["items"]) == 2

    code, body = get(node, "/series/1.2.3.4.404")
    assert code == 404 and body["status"] == 404 and body["title"] == "Not Found"
    assert get(node, "/instances/1.2.3.4.404")[0] == 404
    assert get(node, "/series/1.2.3.4.404/instances")[0] == 404
    for bad in (
        "/series?limit=0",
        "/series?limit=x",
        "/series?cursor=zzz",
        "/series?state=sleeping",
        "/series?colour=red",
    ):
        code, body = get(node, bad)
        assert code == 400, bad
        assert body["detail"]

    code, inst_page = get(node, f"/series/{uids[0]}/instances?limit=2")
    assert code == 200 and len(inst_page["items"]) == 2 and inst_page["next"]
    inst = inst_page["items"][0]
    code, one = get(node, f"/instances/{inst['sop_instance_uid']}")
    assert code == 200 and one == inst
    assert one["status"] == 0 and one["received_pixel_spacing"] == "0.7\\0.5"
    assert one["pixel_spacing"]["row_mm"] == 0.7 and one["actions"] == []

    code, health = get(node, "/health")
    assert code == 200 and health["status"] == "ok"
    code, metrics = get(node, "/metrics")
    assert code == 200
    assert 'spacing_scp_instances_received_total{status="0x0000"}' in metrics
    assert "spacing_scp_index_series 5" in metrics
    code, spec = get(node, "/openapi.json")
    assert code == 200 and "/series/{uid}" in spec["paths"]


def test_cli_series_list_and_show_match_the_api(node: Any, tmp_path: Path) -> None:
    uid, files = write_series(tmp_path, regular(8))
    send_series(node, files)
    data_dir = str(node.cfg.data_dir)
    out = subprocess.run(
        [sys.executable, "-m", "scp", "series", "show", uid, "--json", "--data-dir", data_dir],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    shown = json.loads(out.stdout)
    assert _comparable(shown) == _comparable(series(node, uid))
    out = subprocess.run(
        [sys.executable, "-m", "scp", "series", "list", "--data-dir", data_dir],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0 and uid in out.stdout and "1.25" in out.stdout
    out = subprocess.run(
        [sys.executable, "-m", "scp", "series", "show", "9.9.9", "--data-dir", data_dir],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2 and "no series" in out.stderr


def test_check_folder_gives_the_same_series_answer(quiet_node: Any, tmp_path: Path) -> None:
    node = quiet_node
    positions = regular(12)
    del positions[5]
    uid, files = write_series(tmp_path / "folder", positions)
    send_series(node, files)
    time.sleep(1.2)  # settled: the network answer is final, like check's
    out = subprocess.run(
        [sys.executable, "-m", "scp", "check", "--json", str(tmp_path / "folder")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert len(report["instances"]) == 11
    [offline] = report["series"]
    online = series(node, uid)
    assert online["state"] == "settled"
    for key in (
        "pixel_spacing",
        "slice_spacing",
        "slice_thickness_mm",
        "spacing_between_slices_mm",
        "stacks",
        "findings",
        "instance_count",
    ):
        assert offline[key] == online[key], key
