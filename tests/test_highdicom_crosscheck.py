"""An independent cross-check (issue 13): the Z spacing the node measures for every
regular stack of the real corpus (pydicom's test files, pydicom-data) and of generated
series agrees with highdicom's volume geometry (``highdicom.spatial.get_volume_positions``,
a test dependency only). Positions are kept in µm by the node, hence the 1e-3 mm.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pytest
from pydicom import dcmread

from scp.series import SliceGeometry, slices_from_dataset, summarize_series
from tests.conftest import corpus_files
from tests.series_builders import SAGITTAL, regular, tilted_iop, write_enhanced_mr, write_series

spatial = pytest.importorskip("highdicom.spatial")


def _corpus_series() -> dict[str, list[SliceGeometry]]:
    series: dict[str, dict[tuple[str, int | None], SliceGeometry]] = defaultdict(dict)
    for path in corpus_files():
        try:
            ds = dcmread(path, stop_before_pixels=True, force=True)
            slices = slices_from_dataset(ds)
        except Exception:
            continue
        for g in slices:  # the same instance in several transfer syntaxes counts once
            series[str(ds.get("SeriesInstanceUID", ""))][(g.sop_instance_uid, g.frame_number)] = g
    return {uid: list(members.values()) for uid, members in series.items()}


def _regular_stacks(
    series: dict[str, list[SliceGeometry]],
) -> list[tuple[str, list[SliceGeometry], float]]:
    """(series, slices, Z mm) of every series that is one regular stack of 2+ positions."""
    out = []
    for uid, slices in series.items():
        summary = summarize_series(slices).to_dict()
        if len(summary["stacks"]) != 1:
            continue
        spacing = summary["stacks"][0]["slice_spacing"]
        if spacing["uniform"] and not spacing["missing_slices"] and spacing["repeats"] == 1:
            out.append((uid, slices, spacing["mm"]))
    return out


def _highdicom_spacing(slices: list[SliceGeometry]) -> float | None:
    spacing, _ = spatial.get_volume_positions(
        [list(g.ipp) for g in slices], list(slices[0].iop), rtol=0.01
    )
    return None if spacing is None else float(spacing)


def test_corpus_stacks_agree_with_highdicom() -> None:
    stacks = _regular_stacks(_corpus_series())
    assert len(stacks) >= 3, "the corpus has regular stacks (CT series, enhanced CT/MR)"
    for uid, slices, mm in stacks:
        assert _highdicom_spacing(slices) == pytest.approx(mm, abs=1e-3), uid


def test_generated_stacks_agree_with_highdicom(tmp_path: Path) -> None:
    series: dict[str, list[SliceGeometry]] = {}
    for name, positions, kwargs in [
        ("axial", regular(20, 1.25), {}),
        ("thin", regular(30, 0.625), {}),
        ("sagittal", regular(12, 3.0), {"iop": SAGITTAL}),
        ("oblique", regular(10, 2.5), {"iop": tilted_iop(17.0)}),
        ("midpoint", regular(6, 2.5), {"pixel_spacing": "0.9765625\\0.9765625"}),
    ]:
        uid, files = write_series(tmp_path / name, positions, **kwargs)  # type: ignore[arg-type]
        series[uid] = [g for f in files for g in slices_from_dataset(dcmread(f))]
    uid, path = write_enhanced_mr(tmp_path / "enhanced.dcm", frames=12, gap=1.2)
    series[uid] = slices_from_dataset(dcmread(path))
    stacks = _regular_stacks(series)
    assert len(stacks) == len(series)
    for uid, slices, mm in stacks:
        assert _highdicom_spacing(slices) == pytest.approx(mm, abs=1e-3), uid
