"""Per-series Z geometry (rulebook section G, rules 21-30): the modules of scp.series."""

from __future__ import annotations

import bisect
import json
import math
import random
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence

from scp.pipeline.model import Severity
from scp.series import (
    GapStats,
    SeriesGeometry,
    SeriesState,
    SliceGeometry,
    StackIdentity,
    Tolerance,
    evaluate_stack,
    iop_valid,
    match_stack,
    position_um,
    project,
    slice_normal,
    slices_from_dataset,
    stack_key,
    summarize_series,
    summarize_stack,
)

FOR = "1.2.826.0.1.3680043.8.498.77.1"
AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
SAGITTAL = (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)
Vec = tuple[float, float, float]


def make_slice(
    ipp: Sequence[float],
    iop: Sequence[float] = AXIAL,
    *,
    uid: str = "",
    for_uid: str = FOR,
    rows: int = 512,
    columns: int = 512,
    ps: tuple[float, float] | None = (0.5, 0.5),
    st: float | None = None,
    sbs: float | None = None,
    modality: str = "CT",
    frame: int | None = None,
) -> SliceGeometry:
    return SliceGeometry(
        frame_of_reference_uid=for_uid,
        rows=rows,
        columns=columns,
        iop=tuple(iop),
        ipp=tuple(ipp),
        pixel_spacing=ps,
        slice_thickness=st,
        spacing_between_slices=sbs,
        modality=modality,
        sop_instance_uid=uid,
        frame_number=frame,
    )


def axial_ct(
    zs: Iterable[float],
    *,
    seed: int = 0,
    prefix: str = "1.2.3.",
    **kwargs: object,
) -> list[SliceGeometry]:
    """Axial CT slices at the given table positions, in shuffled order."""
    out = [
        make_slice((-250.0, -250.0, z), uid=f"{prefix}{i}", **kwargs)  # type: ignore[arg-type]
        for i, z in enumerate(zs)
    ]
    random.Random(seed).shuffle(out)
    return out


def codes(geometry: SeriesGeometry) -> list[str]:
    return geometry.codes


def finding(geometry: SeriesGeometry, code: str) -> tuple[Severity, int, str]:
    found = [f for f in geometry.findings if f.code == code]
    assert found, f"{code} not in {geometry.codes}"
    return found[0].severity, found[0].count, found[0].message


def roundtrip(geometry: SeriesGeometry) -> dict[str, Any]:
    data = geometry.to_dict()
    assert json.loads(json.dumps(data)) == data
    return data


# --------------------------------------------------------------------------------------------
# A stand-in for the database layer: quantized positions per stack, indexed queries.
# --------------------------------------------------------------------------------------------


class FakeIndex:
    """Feeds :class:`SeriesState` one slice at a time as the DB layer would, saving and
    reloading the JSON state between slices."""

    def __init__(self) -> None:
        self.state_json = SeriesState().to_json()
        self.counts: dict[str, dict[int, int]] = {}
        self.distinct: dict[str, list[int]] = {}

    def add(self, g: SliceGeometry) -> None:
        state = SeriesState.from_json(self.state_json)
        placement = state.locate(g)
        below: tuple[int, ...] = ()
        above: tuple[int, ...] = ()
        at = 0
        z = placement.position_um
        if z is not None:
            counts = self.counts.setdefault(placement.stack_key, {})
            zs = self.distinct.setdefault(placement.stack_key, [])
            at = counts.get(z, 0)
            i = bisect.bisect_left(zs, z)
            below = tuple(reversed(zs[max(0, i - 2) : i]))
            above = tuple(zs[i + (1 if at else 0) : i + (1 if at else 0) + 2])
        got = state.add(g, below=below, above=above, at_position=at)
        assert got == placement
        if z is not None:
            if not at:
                bisect.insort(self.distinct[placement.stack_key], z)
            self.counts[placement.stack_key][z] = at + 1
        self.state_json = state.to_json()

    def summary(self, receiving: bool = False) -> SeriesGeometry:
        return SeriesState.from_json(self.state_json).summary(receiving)


def incremental(slices: Iterable[SliceGeometry]) -> FakeIndex:
    index = FakeIndex()
    for g in slices:
        index.add(g)
    return index


def insert_all(positions: Sequence[int]) -> GapStats:
    """GapStats built one position at a time, neighbours found like an indexed query."""
    stats = GapStats()
    distinct: list[int] = []
    counts: dict[int, int] = {}
    for z in positions:
        at = counts.get(z, 0)
        i = bisect.bisect_left(distinct, z)
        if at:
            stats.insert(z, at_position=at)
        else:
            stats.insert(
                z, tuple(reversed(distinct[max(0, i - 2) : i])), tuple(distinct[i : i + 2])
            )
            distinct.insert(i, z)
        counts[z] = at + 1
        stats = GapStats.from_json(stats.to_json())
    return stats


# --------------------------------------------------------------------------------------------
# Vectors and identity (rules 21-23)
# --------------------------------------------------------------------------------------------


def test_normal_and_projection() -> None:
    assert slice_normal(AXIAL) == (0.0, 0.0, 1.0)
    assert slice_normal(SAGITTAL) == (-1.0, 0.0, 0.0)
    assert project((10.0, 20.0, -30.0), (0.0, 0.0, 1.0)) == -30.0
    with pytest.raises(ValueError):
        slice_normal((1.0, 0.0, 0.0, 1.0, 0.0, 0.0))
    assert position_um(-62.5) == -62500
    assert position_um(0.0004) == 0


def test_iop_valid() -> None:
    assert iop_valid(AXIAL) is None
    assert iop_valid((1.00009, 0, 0, 0, 1, 0)) is None
    bad_length = iop_valid((1.01, 0, 0, 0, 1, 0))
    assert bad_length is not None
    assert bad_length.code == "GEOMETRY_INVALID"
    assert bad_length.severity is Severity.INVALID
    assert bad_length.rule == "22" and bad_length.tag == "(0020,0037)"
    assert "unit" in bad_length.message
    not_orthogonal = iop_valid((1, 0, 0, 0.01, math.sqrt(1 - 1e-4), 0))
    assert not_orthogonal is not None and "orthogonal" in not_orthogonal.message
    assert iop_valid((1, 0, 0, 0, 1)) is not None
    assert iop_valid((1, 0, 0, 0, float("nan"), 0)) is not None


def test_stack_key_and_match_by_tolerance_across_rounding_boundary() -> None:
    a = make_slice((0, 0, 0), (1.0, 0.00004999, 0.0, 0.0, 1.0, 0.0))
    b = make_slice((0, 0, 1), (1.0, 0.00005001, 0.0, 0.0, 1.0, 0.0))
    assert stack_key(a) != stack_key(b)  # the 1e-4 grid limitation
    assert match_stack(b, [StackIdentity.of(a)]) == stack_key(a)
    other_for = make_slice((0, 0, 0), AXIAL, for_uid="1.2.3.4")
    other_size = make_slice((0, 0, 0), AXIAL, rows=256)
    tilted = make_slice((0, 0, 0), (1.0, 0.0002, 0.0, 0.0, 1.0, 0.0))
    for g in (other_for, other_size, tilted):
        assert match_stack(g, [StackIdentity.of(a)]) is None
    series = summarize_series([a, b])
    assert len(series.stacks) == 1 and "SERIES_GEOMETRY_MIXED" not in series.codes


# --------------------------------------------------------------------------------------------
# Series scenarios
# --------------------------------------------------------------------------------------------


def test_regular_ct_descending_shuffled() -> None:
    zs = [100.0 - 1.25 * i for i in range(50)]
    slices = axial_ct(zs, st=1.25, sbs=1.25)
    geometry = summarize_series(slices)
    data = roundtrip(geometry)
    assert geometry.findings == ()
    assert data["pixel_spacing"] == {"row_mm": 0.5, "column_mm": 0.5, "consistent": True}
    assert data["slice_spacing"] == {
        "mm": 1.25,
        "min_mm": 1.25,
        "max_mm": 1.25,
        "uniform": True,
        "missing_slices": 0,
        "tilt_degrees": 0.0,
        "provisional": False,
        "distinct_gaps_mm": [1.25],
        "repeats": 1,
    }
    assert data["slice_thickness_mm"] == 1.25
    assert data["spacing_between_slices_mm"] == 1.25
    stacks = data["stacks"]
    assert isinstance(stacks, list) and len(stacks) == 1
    assert stacks[0]["slices"] == 50 and stacks[0]["main"] is True
    assert incremental(slices).summary().to_dict() == data


def test_one_missing_slice_final_and_provisional() -> None:
    zs = [-1.25 * i for i in range(50) if i != 17]
    final = summarize_series(axial_ct(zs))
    severity, count, message = finding(final, "SLICE_MISSING")
    assert severity is Severity.WARNING and count == 1
    assert "rule 26" in message and "provisional" not in message
    spacing = final.to_dict()["slice_spacing"]
    assert spacing["mm"] == 1.25 and spacing["missing_slices"] == 1
    assert spacing["uniform"] is False and spacing["max_mm"] == 2.5
    assert "SLICE_SPACING_NONUNIFORM" not in final.codes

    receiving = summarize_series(axial_ct(zs), receiving=True)
    _, _, message = finding(receiving, "SLICE_MISSING")
    assert "provisional" in message
    assert receiving.to_dict()["slice_spacing"]["provisional"] is True

    three_missing = summarize_series(axial_ct([0, 1, 2, 6, 7, 8, 9, 10, 14, 15, 16]))
    _, count, _ = finding(three_missing, "SLICE_MISSING")
    assert count == 6  # two gaps of 4 mm: 3 slices each


def test_duplicate_position_makes_z_undefined() -> None:
    zs = [2.5 * i for i in range(20)] + [2.5 * 7]
    geometry = summarize_series(axial_ct(zs))
    severity, count, message = finding(geometry, "SLICE_DUPLICATE_POSITION")
    assert severity is Severity.WARNING and count == 1 and "undefined" in message
    spacing = geometry.to_dict()["slice_spacing"]
    assert spacing["mm"] is None and spacing["repeats"] is None
    assert incremental(axial_ct(zs)).summary().to_dict() == geometry.to_dict()


def test_near_duplicate_positions_straddling_a_rounding_boundary() -> None:
    # 0.2 um apart, but on either side of a 1 um rounding boundary: a 1 um gap
    zs = [2.5 * i for i in range(9)] + [22.5 + 0.0004999, 22.5 + 0.0005001]
    geometry = summarize_series(axial_ct(zs))
    assert "SLICE_DUPLICATE_POSITION" in geometry.codes
    assert geometry.to_dict()["slice_spacing"]["mm"] is None


def test_clean_4d_repeat() -> None:
    zs = [-2.5 * i for i in range(20)]
    slices = [g for phase in range(3) for g in axial_ct(zs, seed=phase, prefix=f"1.2.3.{phase}.")]
    random.Random(4).shuffle(slices)
    geometry = summarize_series(slices)
    spacing = geometry.to_dict()["slice_spacing"]
    assert spacing["mm"] == 2.5 and spacing["repeats"] == 3 and spacing["uniform"] is True
    severity, count, message = finding(geometry, "SLICE_DUPLICATE_POSITION")
    assert severity is Severity.WARNING and count == 40 and "clean 4D repeat" in message
    assert geometry.stacks[0].summary.slices == 60
    assert geometry.stacks[0].summary.positions == 20
    assert incremental(slices).summary().to_dict() == geometry.to_dict()

    # the third phase still arriving: not clean yet, provisional
    partial = slices[:50]
    geometry = summarize_series(partial, receiving=True)
    assert geometry.to_dict()["slice_spacing"]["mm"] is None
    _, _, message = finding(geometry, "SLICE_DUPLICATE_POSITION")
    assert "provisional" in message


@pytest.mark.parametrize(
    "gaps",
    [
        [1.0] * 20 + [2.0] * 10,  # 1.0 is the median: the 2.0 run is not missing slices
        [2.0] * 8 + [1.0] * 20 + [2.0] * 8,  # thin slices in the middle
        [1.0] * 10 + [2.0] * 19,  # 2.0 is the median
    ],
)
def test_variable_spacing_runs(gaps: list[float]) -> None:
    zs = [0.0]
    for gap in gaps:
        zs.append(zs[-1] + gap)
    geometry = summarize_series(axial_ct(zs))
    severity, count, message = finding(geometry, "SLICE_SPACING_NONUNIFORM")
    assert severity is Severity.WARNING and "rule 30" in message
    spacing = geometry.to_dict()["slice_spacing"]
    assert spacing["distinct_gaps_mm"] == [1.0, 2.0]
    assert spacing["uniform"] is False and spacing["missing_slices"] == 0
    assert "SLICE_MISSING" not in geometry.codes
    assert count == min(gaps.count(1.0), gaps.count(2.0))
    assert incremental(axial_ct(zs, seed=3)).summary().to_dict() == geometry.to_dict()


def test_single_irregular_gap_is_nonuniform() -> None:
    zs = [1.25 * i for i in range(10)] + [1.25 * 9 + 1.7]
    geometry = summarize_series(axial_ct(zs))
    _, count, message = finding(geometry, "SLICE_SPACING_NONUNIFORM")
    assert count == 1 and "1.7" in message
    assert geometry.to_dict()["slice_spacing"]["missing_slices"] == 0


def test_jittered_spacing_within_tolerance_is_uniform() -> None:
    rng = random.Random(7)
    zs = [3.0 * i + rng.uniform(-0.01, 0.01) for i in range(40)]
    geometry = summarize_series(axial_ct(zs))
    assert geometry.findings == ()
    spacing = geometry.to_dict()["slice_spacing"]
    assert spacing["uniform"] is True and abs(spacing["mm"] - 3.0) < 0.02
    assert spacing["distinct_gaps_mm"] and len(spacing["distinct_gaps_mm"]) <= 3


def test_gantry_tilt() -> None:
    t = math.radians(20.0)
    iop = (1.0, 0.0, 0.0, 0.0, math.cos(t), -math.sin(t))
    # the table moves along z; the tilted planes are stacked along z, not along their normal
    slices = [make_slice((-250.0, -180.0, -2.0 * i), iop, uid=f"1.9.{i}") for i in range(30)]
    geometry = summarize_series(slices)
    severity, count, message = finding(geometry, "SLICE_TILT")
    assert severity is Severity.WARNING and count == 30 and "gantry tilt/sheared" in message
    spacing = geometry.to_dict()["slice_spacing"]
    assert spacing["tilt_degrees"] == pytest.approx(20.0, abs=1e-3)
    assert spacing["mm"] == pytest.approx(2.0 * math.cos(t), abs=1e-3)  # along the normal
    assert spacing["uniform"] is True

    # sheared: axial IOP, IPP shifting in y as z moves (tilt resampled onto axial planes)
    sheared = [
        make_slice((-250.0, -180.0 + 2.0 * i * math.tan(t), 2.0 * i), AXIAL, uid=f"1.8.{i}")
        for i in range(30)
    ]
    geometry = summarize_series(sheared)
    assert geometry.to_dict()["slice_spacing"]["tilt_degrees"] == pytest.approx(20.0, abs=1e-3)
    assert geometry.to_dict()["slice_spacing"]["mm"] == 2.0

    # a tilt below the rule 28 tolerance (|dot| >= 1 - 1e-3, about 2.56 deg) is not flagged
    small = math.radians(2.0)
    slight = [
        make_slice((0.0, 2.0 * i * math.tan(small), 2.0 * i), AXIAL, uid=f"1.7.{i}")
        for i in range(10)
    ]
    assert "SLICE_TILT" not in summarize_series(slight).codes


def test_sagittal_mr_stack() -> None:
    slices = [
        make_slice((-40.0 + 3.3 * i, -120.0, 110.0), SAGITTAL, uid=f"2.{i}", modality="MR")
        for i in range(25)
    ]
    random.Random(1).shuffle(slices)
    geometry = summarize_series(slices)
    assert geometry.findings == ()
    spacing = geometry.to_dict()["slice_spacing"]
    assert spacing["mm"] == 3.3 and spacing["uniform"] is True


def _oblique_iop(a: float, b: float) -> tuple[float, ...]:
    row = (math.cos(a), math.sin(a), 0.0)
    col = (-math.sin(a) * math.cos(b), math.cos(a) * math.cos(b), math.sin(b))
    return tuple(round(v, 6) for v in (*row, *col))  # as written in a DS


def test_oblique_mr_stack() -> None:
    iop = _oblique_iop(math.radians(17.0), math.radians(-31.0))
    n = slice_normal(iop)
    row, col = iop[:3], iop[3:]
    slices = []
    for i in range(30):
        shift = (7.0, -5.0)  # an in-plane offset; one varying along the stack would be a tilt
        ipp = [-90.0 + 4.0 * i * n[k] + shift[0] * row[k] + shift[1] * col[k] for k in range(3)]
        slices.append(make_slice([round(v, 5) for v in ipp], iop, uid=f"3.{i}", modality="MR"))
    geometry = summarize_series(slices)
    assert geometry.findings == ()
    spacing = geometry.to_dict()["slice_spacing"]
    assert spacing["mm"] == pytest.approx(4.0, abs=2e-3)
    assert spacing["tilt_degrees"] is not None and spacing["tilt_degrees"] < 0.1


def test_spacing_between_slices_cross_check() -> None:
    zs = [3.0 * i for i in range(20)]
    mismatch = summarize_series(axial_ct(zs, sbs=3.3))
    severity, count, message = finding(mismatch, "SPACING_BETWEEN_SLICES_MISMATCH")
    assert severity is Severity.WARNING and count == 20 and "(0018,0088)" in message
    assert mismatch.to_dict()["slice_spacing"]["mm"] == 3.0  # IPP wins (rule 24)
    assert summarize_series(axial_ct(zs, sbs=3.02)).findings == ()  # within 1% of 3.0
    assert summarize_series(axial_ct(zs, sbs=0.0)).findings == ()  # 0 = unknown
    negative = summarize_series(axial_ct(zs, sbs=-3.0))
    assert negative.codes == ["SPACING_BETWEEN_SLICES_NEGATIVE"]
    assert summarize_series(axial_ct(zs, sbs=-3.0, modality="NM")).findings == ()
    nm_wrong = summarize_series(axial_ct(zs, sbs=-4.0, modality="NM"))
    assert nm_wrong.codes == ["SPACING_BETWEEN_SLICES_MISMATCH"]
    strict = summarize_series(axial_ct(zs, sbs=3.02), tolerance=Tolerance(rel=0.001, abs_mm=0))
    assert strict.codes == ["SPACING_BETWEEN_SLICES_MISMATCH"]


def test_slice_thickness_differs_is_info() -> None:
    overlap = summarize_series(axial_ct([0.625 * i for i in range(16)], st=1.25))
    severity, _, message = finding(overlap, "SLICE_THICKNESS_DIFFERS")
    assert severity is Severity.INFO and "overlapping" in message
    assert overlap.to_dict()["slice_spacing"]["mm"] == 0.625  # never from ST
    gap = summarize_series(axial_ct([5.0 * i for i in range(16)], st=1.0))
    assert "gaps between slices" in finding(gap, "SLICE_THICKNESS_DIFFERS")[2]


def test_single_slice_has_no_z() -> None:
    geometry = summarize_series(axial_ct([12.5], st=1.0, sbs=1.0))
    data = roundtrip(geometry)
    assert geometry.findings == ()
    spacing = data["slice_spacing"]
    assert spacing["mm"] is None and spacing["min_mm"] is None and spacing["uniform"] is None
    assert data["slice_thickness_mm"] == 1.0  # reported, never used as Z
    empty = summarize_series([])
    assert roundtrip(empty)["slice_spacing"]["mm"] is None and empty.main is None


def test_iop_not_unit_length() -> None:
    iop = (1.01, 0.0, 0.0, 0.0, 1.0, 0.0)
    geometry = summarize_series(axial_ct([2.0 * i for i in range(10)], iop=iop))
    severity, count, message = finding(geometry, "GEOMETRY_INVALID")
    assert severity is Severity.INVALID and count == 10 and "rule 22" in message
    assert roundtrip(geometry)["slice_spacing"]["mm"] is None
    assert incremental(axial_ct([2.0 * i for i in range(10)], iop=iop)).summary().to_dict() == (
        geometry.to_dict()
    )


def test_mixed_orientation_and_frame_of_reference() -> None:
    main = axial_ct([1.5 * i for i in range(30)], prefix="4.1.")
    localizers = [make_slice((-1.0 + i, -200.0, 200.0), SAGITTAL, uid=f"4.2.{i}") for i in range(3)]
    other_for = axial_ct([5.0 * i for i in range(10)], prefix="4.3.", for_uid="1.2.3.99")
    geometry = summarize_series([*localizers, *main, *other_for])
    severity, count, message = finding(geometry, "SERIES_GEOMETRY_MIXED")
    assert severity is Severity.WARNING and count == 3 and "rule 21" in message
    data = roundtrip(geometry)
    assert data["slice_spacing"]["mm"] == 1.5  # the main (largest) stack
    stacks = data["stacks"]
    assert isinstance(stacks, list)
    assert [s["slices"] for s in stacks] == [30, 10, 3]
    assert [s["main"] for s in stacks] == [True, False, False]
    assert stacks[1]["slice_spacing"]["mm"] == 5.0
    assert stacks[2]["slice_spacing"]["mm"] == 1.0  # the three sagittal localizers


def test_one_reversed_pixel_spacing() -> None:
    slices = axial_ct([2.0 * i for i in range(40)], ps=(0.5, 0.7))
    slices.append(make_slice((-250.0, -250.0, 80.0), ps=(0.7, 0.5), uid="5.1"))
    geometry = summarize_series(slices)
    severity, count, message = finding(geometry, "SERIES_PIXEL_SPACING_INCONSISTENT")
    assert severity is Severity.WARNING and count == 1
    assert "suspect reversed" in message and "(0028,0030)" in message
    assert roundtrip(geometry)["pixel_spacing"] == {
        "row_mm": 0.5,
        "column_mm": 0.7,
        "consistent": False,
    }
    assert geometry.to_dict()["slice_spacing"]["mm"] == 2.0


def _enhanced_mr(per_frame_measures: bool) -> Dataset:
    ds = Dataset()
    ds.SOPInstanceUID = "1.2.3.77"
    ds.Modality = "MR"
    ds.FrameOfReferenceUID = FOR
    ds.Rows = 256
    ds.Columns = 192
    ds.NumberOfFrames = 24
    orientation = Dataset()
    orientation.ImageOrientationPatient = list(SAGITTAL)
    shared = Dataset()
    shared.PlaneOrientationSequence = DicomSequence([orientation])
    measures = Dataset()
    measures.PixelSpacing = [0.9375, 0.9375]
    measures.SliceThickness = 1.0
    measures.SpacingBetweenSlices = 1.2
    if not per_frame_measures:
        shared.PixelMeasuresSequence = DicomSequence([measures])
    ds.SharedFunctionalGroupsSequence = DicomSequence([shared])
    frames = []
    for i in range(24):
        position = Dataset()
        position.ImagePositionPatient = [f"{30.0 - 1.2 * i:.4f}", "-100.0", "90.0"]
        frame = Dataset()
        frame.PlanePositionSequence = DicomSequence([position])
        if per_frame_measures:
            frame.PixelMeasuresSequence = DicomSequence([measures])
        frames.append(frame)
    order = list(range(24))
    random.Random(2).shuffle(order)  # frames need not be in spatial order
    ds.PerFrameFunctionalGroupsSequence = DicomSequence([frames[i] for i in order])
    return ds


@pytest.mark.parametrize("per_frame_measures", [False, True])
def test_enhanced_mr_frames_form_a_stack(per_frame_measures: bool) -> None:
    slices = slices_from_dataset(_enhanced_mr(per_frame_measures))
    assert len(slices) == 24
    assert [g.frame_number for g in slices] == list(range(1, 25))
    assert {g.sop_instance_uid for g in slices} == {"1.2.3.77"}
    assert slices[0].pixel_spacing == (0.9375, 0.9375) and slices[0].rows == 256
    geometry = summarize_series(slices)
    assert geometry.codes == ["SLICE_THICKNESS_DIFFERS"]  # 1.0 mm slices every 1.2 mm
    data = roundtrip(geometry)
    assert data["slice_spacing"]["mm"] == 1.2 and data["slice_spacing"]["uniform"] is True
    assert data["spacing_between_slices_mm"] == 1.2 and data["slice_thickness_mm"] == 1.0


def test_slices_from_single_frame_dataset() -> None:
    ds = Dataset()
    ds.SOPInstanceUID = "1.2.3.5"
    ds.Modality = "CT"
    ds.FrameOfReferenceUID = FOR
    ds.Rows = 512
    ds.Columns = 512
    ds.ImagePositionPatient = ["-250", "-250", "-12.5"]
    ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
    ds.PixelSpacing = ["0.48828125", "0.48828125"]
    ds.SliceThickness = "1.25"
    [g] = slices_from_dataset(ds)
    assert g.ipp == (-250.0, -250.0, -12.5) and g.iop == AXIAL
    assert g.pixel_spacing == (0.48828125, 0.48828125) and g.slice_thickness == 1.25
    assert g.spacing_between_slices is None and g.frame_number is None
    del ds.ImagePositionPatient
    assert slices_from_dataset(ds) == []


def test_summarize_stack_direct() -> None:
    n = slice_normal(AXIAL)
    ipps = [(0.0, 0.0, -1.25 * i) for i in range(10)]
    summary = summarize_stack([project(p, n) for p in ipps], ipps, normal=n, slice_thickness=1.25)
    assert summary.spacing_mm == 1.25 and summary.uniform and summary.tilt_degrees == 0.0
    assert summary.findings == ()
    assert summarize_stack([3.0]).spacing_mm is None
    assert summarize_stack([]).spacing_mm is None


# --------------------------------------------------------------------------------------------
# GapStats
# --------------------------------------------------------------------------------------------


def test_gapstats_json_format() -> None:
    stats = insert_all([0, 2500, 1250, 1250, 5000, 0, 2500, 5000])
    data = json.loads(stats.to_json())
    assert data == {
        "version": 1,
        "quantum_mm": 0.001,
        "n": 8,
        "lo": 0,
        "hi": 5000,
        "lo_gap": 1250,
        "hi_gap": 2500,
        "multiplicity": {"2": 4},
        "gaps": {"1250": 2, "2500": 1},
        "pairs": {"1250,1250": 1, "1250,2500": 1},
    }
    assert (
        GapStats.from_dict(data)
        == stats
        == GapStats.from_positions([0, 0, 1250, 1250, 2500, 2500, 5000, 5000])
    )
    with pytest.raises(ValueError):
        GapStats.from_dict({**data, "version": 2})


def test_gapstats_rejects_stale_neighbours_atomically() -> None:
    stats = GapStats.from_positions([0, 1000, 2000, 3000])
    before = stats.copy()
    with pytest.raises(ValueError):
        stats.insert(1500, (1000,), (2000, 3000))  # the second one below (0) is missing
    with pytest.raises(ValueError):
        stats.insert(1500, (1000, 0), (3000,))  # 2000 is nearer above
    with pytest.raises(ValueError):
        stats.insert(4000, (2000, 1000), ())  # 3000 is the highest
    with pytest.raises(ValueError):
        stats.insert(1000, at_position=2)  # no position holds 2 slices
    assert stats == before
    stats.insert(1500, (1000, 0), (2000, 3000))
    assert stats == GapStats.from_positions([0, 1000, 1500, 2000, 3000])


def test_gapstats_merge() -> None:
    low = GapStats.from_positions([0, 1000, 2000])
    high = GapStats.from_positions([4000, 5000, 5000])
    whole = GapStats.from_positions([0, 1000, 2000, 4000, 5000, 5000])
    assert low.merge(high) == whole == high.merge(low)
    assert low.merge(GapStats()) == low
    with pytest.raises(ValueError):
        low.merge(GapStats.from_positions([1500]))


positions_strategy = st.one_of(
    # grid positions: duplicates, missing slices, runs of other gaps
    st.lists(
        st.tuples(st.integers(0, 30), st.sampled_from([1000, 1250, 2000]), st.integers(-2, 2)),
        max_size=60,
    ).map(lambda items: [k * step + j for k, step, j in items]),
    st.lists(st.integers(-(10**6), 10**6), max_size=40),
)


@settings(max_examples=200, deadline=None)
@given(positions=positions_strategy, seed=st.integers(0, 2**32 - 1), receiving=st.booleans())
def test_gapstats_incremental_equals_batch(
    positions: list[int], seed: int, receiving: bool
) -> None:
    order = list(positions)
    random.Random(seed).shuffle(order)
    batch = GapStats.from_positions(positions)
    live = insert_all(order)
    assert live == batch
    assert evaluate_stack(live, receiving=receiving) == evaluate_stack(batch, receiving=receiving)
    summary = summarize_stack([z / 1000.0 for z in order], receiving=receiving)
    assert summary == evaluate_stack(batch, receiving=receiving)


@settings(max_examples=100, deadline=None)
@given(positions=positions_strategy, seed=st.integers(0, 2**32 - 1))
def test_gapstats_remove_is_the_inverse_of_insert(positions: list[int], seed: int) -> None:
    rng = random.Random(seed)
    stats = GapStats.from_positions(positions)
    remaining = list(positions)
    rng.shuffle(remaining)
    while remaining:
        z = remaining.pop()
        counts = {p: remaining.count(p) + (p == z) for p in set(remaining) | {z}}
        distinct = sorted(p for p in counts if p != z)
        i = bisect.bisect_left(distinct, z)
        stats.remove(
            z,
            tuple(reversed(distinct[max(0, i - 2) : i])),
            tuple(distinct[i : i + 2]),
            at_position=counts[z],
        )
        assert stats == GapStats.from_positions(remaining)
    assert stats == GapStats()


@settings(max_examples=100, deadline=None)
@given(positions=positions_strategy, cut=st.integers(0, 60))
def test_gapstats_merge_of_split_ranges(positions: list[int], cut: int) -> None:
    distinct = sorted(set(positions))
    assume(distinct)
    edge = distinct[min(cut, len(distinct) - 1)]
    low = GapStats.from_positions([p for p in positions if p < edge])
    high = GapStats.from_positions([p for p in positions if p >= edge])
    assert low.merge(high) == GapStats.from_positions(positions)


# --------------------------------------------------------------------------------------------
# Invariance properties
# --------------------------------------------------------------------------------------------


def _rotation_matrix(a: float, b: float, c: float) -> list[list[float]]:
    """Rz(a) . Ry(b) . Rx(c): any rigid rotation."""
    ca, sa, cb, sb = math.cos(a), math.sin(a), math.cos(b), math.sin(b)
    cc, sc = math.cos(c), math.sin(c)
    return [
        [ca * cb, ca * sb * sc - sa * cc, ca * sb * cc + sa * sc],
        [sa * cb, sa * sb * sc + ca * cc, sa * sb * cc - ca * sc],
        [-sb, cb * sc, cb * cc],
    ]


def _rotate(m: list[list[float]], v: Sequence[float]) -> Vec:
    return (
        m[0][0] * v[0] + m[0][1] * v[1] + m[0][2] * v[2],
        m[1][0] * v[0] + m[1][1] * v[1] + m[1][2] * v[2],
        m[2][0] * v[0] + m[2][1] * v[1] + m[2][2] * v[2],
    )


class StackParams(NamedTuple):
    spacing_um: int
    offset_um: int
    steps: list[int]
    shift: tuple[float, float]
    angles: tuple[float, float, float]
    seed: int


stack_strategy = st.builds(
    StackParams,
    # spacing and offset in whole micrometres plus 0.25 um: far from rounding boundaries
    spacing_um=st.integers(300, 10_000),
    offset_um=st.integers(-200_000, 200_000),
    steps=st.lists(st.sampled_from([0, 1, 1, 1, 1, 1, 2, 3]), min_size=1, max_size=40),
    shift=st.tuples(st.floats(-100, 100), st.floats(-100, 100)),
    angles=st.tuples(*[st.floats(-math.pi, math.pi)] * 3),
    seed=st.integers(0, 2**32 - 1),
)


def _stack(params: StackParams, rotated: bool) -> list[SliceGeometry]:
    """A straight axial stack (gaps of 1-3 spacings), optionally rotated as a rigid body."""
    row, col = (1.0, 0.0, 0.0), (0.0, 1.0, 0.0)
    m = _rotation_matrix(*params.angles)
    slices = []
    k = 0
    for i, step in enumerate([0, *params.steps]):
        k += step
        along = (params.offset_um + k * params.spacing_um + 0.25) / 1000.0
        ipp: Vec = (params.shift[0], params.shift[1], along)
        iop: tuple[float, ...] = (*row, *col)
        if rotated:
            ipp = _rotate(m, ipp)
            iop = (*_rotate(m, row), *_rotate(m, col))
        slices.append(make_slice(ipp, iop, uid=f"6.{i}"))
    random.Random(params.seed).shuffle(slices)
    return slices


def _z_numbers(geometry: SeriesGeometry) -> tuple[object, ...]:
    s = geometry.to_dict()["slice_spacing"]
    return (s["mm"], s["min_mm"], s["max_mm"], s["uniform"], s["missing_slices"], s["repeats"])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(params=stack_strategy)
def test_rigid_rotation_and_shuffle_invariance(params: StackParams) -> None:
    plain = summarize_series(_stack(params, rotated=False))
    rotated = _stack(params, rotated=True)
    turned = summarize_series(rotated)
    assert len(turned.stacks) == 1 and "GEOMETRY_INVALID" not in turned.codes
    a, b = _z_numbers(plain), _z_numbers(turned)
    assert a[3:] == b[3:]
    for x, y in zip(a[:3], b[:3], strict=True):
        assert (x is None and y is None) or abs(float(x) - float(y)) <= 1e-6  # type: ignore[arg-type]
    assert plain.codes == turned.codes
    shuffled = list(rotated)
    random.Random(0).shuffle(shuffled)
    assert summarize_series(shuffled).to_dict() == turned.to_dict()
    assert incremental(shuffled).summary().to_dict() == turned.to_dict()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    zs=st.lists(st.floats(-300, 300, allow_nan=False), min_size=1, max_size=30),
    extra=st.lists(st.integers(0, 29), max_size=5),
    seed=st.integers(0, 2**32 - 1),
    receiving=st.booleans(),
)
def test_incremental_series_equals_batch(
    zs: list[float], extra: list[int], seed: int, receiving: bool
) -> None:
    positions = zs + [zs[i % len(zs)] for i in extra]  # some duplicates
    slices = axial_ct(positions, seed=seed)
    slices += [make_slice((0.0, 0.0, z), SAGITTAL, uid=f"7.{i}") for i, z in enumerate(zs[:3])]
    batch = summarize_series(slices, receiving=receiving)
    live = incremental(slices).summary(receiving)
    assert live.to_dict() == batch.to_dict()


def test_incremental_large_series_is_fast() -> None:
    zs = [-0.625 * i for i in range(3000)]
    slices = axial_ct(zs, seed=9)
    index = incremental(slices)
    data = index.summary().to_dict()
    assert data["slice_spacing"]["mm"] == 0.625
    assert len(index.state_json) < 2000  # the state does not grow with the series
