"""Issue 6, item 7: fuzzing the header parsing and the spacing pipeline (hypothesis).

* ``storage.part10.read_received`` on mutated Part 10 files (bit flips, overwritten
  lengths and tags, truncation, inserted bytes) returns or raises
  :class:`MalformedDataset`, nothing else, and never hangs (each example runs under
  an alarm).
* ``scp.pipeline.run_pipeline`` on headers with random element values (random bytes,
  random VRs, random nesting of the functional groups and ultrasound regions) never
  raises and never needs its own safety net (no ``PIPELINE_ERROR`` finding: that
  would be a stage crashing); the edits it decides apply and re-encode.

Bounded for CI: a fixed number of examples per property, derandomized so a run is
reproducible; the whole module takes a few seconds.  A longer, random hunt:
``SPACING_SCP_FUZZ_RANDOM=1 SPACING_SCP_FUZZ_EXAMPLES=20000 pytest tests/test_fuzz.py``.
Crashes found are kept as regression tests at the end of this file.
"""

from __future__ import annotations

import contextlib
import os
import signal
import struct
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.tag import Tag
from pydicom.uid import ImplicitVRLittleEndian

from scp.pipeline import PIPELINE_ERROR, run_pipeline
from scp.pipeline.model import InstanceContext
from scp.pipeline.policy import SpacingPolicy, SwapRule
from storage.part10 import MalformedDataset, read_received
from tests.dicom_factory import ct_dataset, write

FUZZ = settings(
    max_examples=int(os.environ.get("SPACING_SCP_FUZZ_EXAMPLES", "1000")),
    deadline=None,
    derandomize=os.environ.get("SPACING_SCP_FUZZ_RANDOM") != "1",
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@contextlib.contextmanager
def time_limit(seconds: int) -> Iterator[None]:
    """Fail instead of hanging (SIGALRM: the main thread, as pytest runs tests)."""

    def on_alarm(_signum: int, _frame: Any) -> None:
        raise TimeoutError(f"took longer than {seconds} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


# -- header parsing -----------------------------------------------------------------------------


def _with_sequences(ds: Dataset) -> None:
    measures = Dataset()
    measures.PixelSpacing = ["0.5", "0.5"]
    measures.SliceThickness = "1"
    group = Dataset()
    group.PixelMeasuresSequence = DicomSequence([measures])
    ds.SharedFunctionalGroupsSequence = DicomSequence([group])
    ref = Dataset()
    ref.ReferencedSOPClassUID = "1.2.3"
    ref.ReferencedSOPInstanceUID = "1.2.3.4"
    ds.ReferencedImageSequence = DicomSequence([ref, ref])


def _seeds() -> list[bytes]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        files = [
            write(ct_dataset(rows=4, columns=4), root / "a.dcm"),
            write(ct_dataset(rows=4, columns=4), root / "b.dcm", ImplicitVRLittleEndian),
            write(ct_dataset(rows=4, columns=4, extra=_with_sequences), root / "c.dcm"),
        ]
        return [p.read_bytes() for p in files]


SEEDS = _seeds()


@st.composite
def mutated_files(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["flip", "length", "tag", "cut", "insert", "vr"]))
        pos = draw(st.integers(128, len(data) - 1)) if len(data) > 129 else 128
        if kind == "flip" and pos < len(data):
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif kind == "length" and pos + 4 <= len(data):
            value = draw(st.sampled_from([0, 1, 0xFFFF, 0xFFFFFFFF, 0x7FFFFFFF, 0xFFFFFFF0]))
            data[pos : pos + 4] = struct.pack("<L", value)
        elif kind == "tag" and pos + 4 <= len(data):
            tag = draw(
                st.sampled_from([0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD, 0x7FE00010, 0x00020010])
            )
            data[pos : pos + 4] = struct.pack("<HH", tag >> 16, tag & 0xFFFF)
        elif kind == "vr" and pos + 2 <= len(data):
            data[pos : pos + 2] = draw(st.sampled_from([b"SQ", b"UN", b"OB", b"\x00\x00", b"zz"]))
        elif kind == "cut":
            del data[pos:]
        elif kind == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=64))
    return bytes(data)


def _read(tmp: Path, data: bytes) -> None:
    path = tmp / "fuzz.dcm"
    path.write_bytes(data)
    with time_limit(10):
        try:
            received = read_received(path)
        except MalformedDataset:
            return
    # What ingest reads next must not raise either.
    assert received.size == len(data)
    assert 0 < received.dataset_offset <= received.size
    if received.pixel_offset is not None:
        assert received.dataset_offset <= received.pixel_offset < received.size


@FUZZ
@given(data=mutated_files())
def test_read_received_only_raises_malformed(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        _read(Path(tmp), data)


@settings(max_examples=100, deadline=None, derandomize=True)
@given(data=st.binary(min_size=0, max_size=600))
def test_read_received_on_random_bytes(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        _read(Path(tmp), b"\x00" * 128 + b"DICM" + data)


# -- the spacing pipeline -----------------------------------------------------------------------

#: Tag, usual VR: the attributes the pipeline reads (gathered by scp/pipeline/report.py).
SPACING_TAGS: list[tuple[int, str]] = [
    (0x00280030, "DS"),  # Pixel Spacing
    (0x00181164, "DS"),  # Imager Pixel Spacing
    (0x00182010, "DS"),  # Nominal Scanned Pixel Spacing
    (0x00280A02, "CS"),  # Pixel Spacing Calibration Type
    (0x00280A04, "LO"),
    (0x00181114, "DS"),  # ERMF
    (0x00181110, "DS"),
    (0x00181111, "DS"),
    (0x00280034, "IS"),  # Pixel Aspect Ratio
    (0x00280010, "US"),  # Rows
    (0x00280011, "US"),  # Columns
    (0x00280008, "IS"),  # Number of Frames
    (0x00080060, "CS"),  # Modality
    (0x00080070, "LO"),  # Manufacturer
    (0x00181100, "DS"),  # Reconstruction Diameter
    (0x00200032, "DS"),  # Image Position (Patient)
    (0x00200037, "DS"),  # Image Orientation (Patient)
    (0x00180050, "DS"),  # Slice Thickness
    (0x00180088, "DS"),  # Spacing Between Slices
]
_VRS = ["DS", "IS", "US", "UL", "FD", "FL", "CS", "LO", "UN", "OB", "SQ", "UT"]

_numbers = st.sampled_from(
    ["0.5", "0,5", "1e3", "-0.2", "0", "nan", "inf", " 0.25 ", "1" * 20, "0.48828125000001"]
)
_ds_text = st.lists(_numbers, min_size=0, max_size=4).map(lambda v: "\\".join(v))
_raw_value = st.one_of(
    _ds_text.map(lambda t: t.encode("latin-1")),
    st.binary(max_size=24),
    st.sampled_from([b"", b"\x00", b"\\", b"\\\\", b"CT", b"US", b"GEOMETRY", b"1\\1"]),
)


def _raw(tag: int, vr: str, value: bytes) -> RawDataElement:
    if len(value) % 2:
        value += b" "
    return RawDataElement(Tag(tag), vr, len(value), value, 0, False, True)


#: A header as plain data (so that hypothesis can print a failing example):
#: ``(elements, groups, regions)`` with ``elements`` = ``[(tag, vr, value bytes)]``,
#: ``groups`` = ``(sequence keyword, item count, measures items, measures header)`` or
#: ``None``, ``regions`` = ``[(delta x, delta y, unit x, unit y)]`` or ``None``.
Spec = tuple[list[tuple[int, str, bytes]], Any, Any]


@st.composite
def specs(draw: st.DrawFn, depth: int = 0) -> Spec:
    elements = []
    for tag, usual_vr in draw(st.lists(st.sampled_from(SPACING_TAGS), max_size=12, unique=True)):
        vr = draw(st.sampled_from([usual_vr, usual_vr, *_VRS]))
        if vr != "SQ":
            elements.append((tag, vr, draw(_raw_value)))
    groups = None
    if depth < 1 and draw(st.booleans()):
        keyword = draw(
            st.sampled_from(["SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"])
        )
        groups = (keyword, draw(st.integers(0, 3)), draw(st.integers(0, 2)), draw(specs(depth + 1)))
    regions = None
    if depth == 0 and draw(st.booleans()):
        region = (
            draw(st.floats(allow_nan=True, allow_infinity=True)),
            draw(st.floats(allow_nan=True, allow_infinity=True)),
            draw(st.integers(0, 65535)),
            draw(st.integers(0, 65535)),
        )
        regions = [region] * draw(st.integers(0, 2))
    return elements, groups, regions


def build(spec: Spec) -> Dataset:
    elements, groups, regions = spec
    ds = Dataset()
    ds.set_original_encoding(False, True)
    for tag, vr, value in elements:
        ds[tag] = _raw(tag, vr, value)
    if groups is not None:
        keyword, count, measures_count, inner = groups
        group = Dataset()
        group.PixelMeasuresSequence = DicomSequence([build(inner) for _ in range(measures_count)])
        setattr(ds, keyword, DicomSequence([group] * count))
    if regions is not None:
        items = []
        for dx, dy, ux, uy in regions:
            region = Dataset()
            region.PhysicalDeltaX, region.PhysicalDeltaY = dx, dy
            region.PhysicalUnitsXDirection, region.PhysicalUnitsYDirection = ux, uy
            items.append(region)
        ds.SequenceOfUltrasoundRegions = DicomSequence(items)
    return ds


POLICIES = [
    SpacingPolicy(),
    SpacingPolicy(on_suspect_reversed="swap", on_invalid_spacing="reject"),
    SpacingPolicy(
        swap_rules=(
            SwapRule(
                "all",
                attributes=("PixelSpacing", "ImagerPixelSpacing"),
                match={"Modality": "*"},
                comma_decimal=True,
            ),
        ),
        on_suspect_reversed="swap",
    ),
]


@FUZZ
@given(spec=specs(), policy=st.sampled_from(POLICIES))
def test_pipeline_never_raises(spec: Spec, policy: SpacingPolicy) -> None:
    ds = build(spec)
    ctx = InstanceContext(calling_ae_title="FUZZ", node_ae_title="SPACING_SCP")
    with time_limit(10):
        result = run_pipeline(ds, ctx, policy)
    crashes = [f.message for f in result.findings if f.code == PIPELINE_ERROR]
    assert not crashes, crashes
    _ = result.verdict, result.codes, result.effective
    for edit in result.edits:  # every edit names a path and text the recorder can apply
        assert edit.path and isinstance(edit.path[-1], str)
        assert edit.new is None or isinstance(edit.new, str)


# -- regressions found by the fuzzers (each was a crash before its fix) --------------------------


def test_regression_deep_nesting_is_refused_before_pydicom_recurses(tmp_path: Path) -> None:
    """200 nested sequences: pydicom's parser hit its recursion limit before the walker
    refused the depth; the walker now runs first (storage/part10.py)."""
    ds = ct_dataset(rows=2, columns=2)
    path = write(ds, tmp_path / "deep.dcm")
    data = bytearray(path.read_bytes())
    nest = b""
    tail = b""
    for _ in range(200):
        nest += struct.pack("<HH2sHL", 0x0008, 0x1115, b"SQ", 0, 0xFFFFFFFF)
        nest += struct.pack("<HHL", 0xFFFE, 0xE000, 0xFFFFFFFF)
        tail = (
            struct.pack("<HHL", 0xFFFE, 0xE00D, 0) + struct.pack("<HHL", 0xFFFE, 0xE0DD, 0) + tail
        )
    at = data.index(struct.pack("<HH", 0x0008, 0x0060))  # before Modality
    data[at:at] = nest + tail
    path.write_bytes(bytes(data))
    with pytest.raises(MalformedDataset, match="nested deeper than 32"):
        read_received(path)


def test_regression_group_0002_inside_the_data_set(tmp_path: Path) -> None:
    """A data set carrying (0002,0010): the node used it as the transfer syntax of the
    stored file (implicit data under an explicit VR File Meta)."""
    ds = ct_dataset(rows=2, columns=2)
    path = write(ds, tmp_path / "g2.dcm", ImplicitVRLittleEndian)
    data = bytearray(path.read_bytes())
    ts = b"1.2.840.10008.1.2.1\x00"
    end = 132 + 12 + struct.unpack("<L", data[140:144])[0]  # after (0002,0000) and its group
    data[end:end] = struct.pack("<HH2sH", 2, 0x10, b"UI", len(ts)) + ts
    path.write_bytes(bytes(data))
    with pytest.raises(MalformedDataset, match="group 0002"):
        read_received(path)
