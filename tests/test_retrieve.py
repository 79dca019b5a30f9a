"""Issue 17 item 2: the Retrieve SCP, C-MOVE and C-GET (PS3.4 C.4.2, C.4.3).

A node stores a corrected series (a swap rule: the stored Pixel Spacing differs from the
received one and the Original Attributes Sequence records it), then dcmtk's ``movescu``
(to a dcmtk ``storescp`` Move Destination) and ``getscu`` fetch it back; pynetdicom
requesters check the statuses, counts, 0xA801 and partial failures.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pynetdicom import AE, StoragePresentationContexts, build_role, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

from scp import status
from scp.config import Peer
from scp.pipeline.policy import SwapRule
from tests.conftest import dcmtk_env, dcmtk_tool, make_config, send_files
from tests.dicom_factory import new_uid, write_ct
from tests.pacs import DcmtkPacs, Pacs


@dataclass
class Archive:
    node: Any
    dest: DcmtkPacs
    pacs: Pacs
    study: str = ""
    series: dict[str, str] = field(default_factory=dict)
    sops: dict[str, list[str]] = field(default_factory=dict)


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Archive]:
    """One study, two series: S1 (4 CT slices, Pixel Spacing swapped by a swap rule) and
    S2 (2 CT slices, kept as received); Move Destinations DCMTK (storescp), PYPACS."""
    from scp.node import Node

    root = tmp_path_factory.mktemp("retrieve")
    dest = DcmtkPacs(root / "storescp", ae_title="MOVEDEST")
    pacs = Pacs(ae_title="PYPACS").start()
    cfg = make_config(root / "data")
    cfg.swap_rules = [SwapRule(name="SWAPCO writes column first", match={"Manufacturer": "SWAPCO"})]
    cfg.move_destinations = [
        Peer(ae_title="MOVEDEST", host="127.0.0.1", port=dest.port),
        Peer(ae_title="PYPACS", host="127.0.0.1", port=pacs.port),
    ]
    node = Node(cfg)
    node.start()
    arc = Archive(node=node, dest=dest, pacs=pacs, study=new_uid())
    files = []
    for name, count, manufacturer in (("S1", 4, "SWAPCO"), ("S2", 2, "OTHER")):
        series = arc.series[name] = new_uid()
        for i in range(count):
            sop = new_uid()
            arc.sops.setdefault(name, []).append(sop)

            def extra(ds: Dataset, manufacturer: str = manufacturer) -> None:
                ds.Manufacturer = manufacturer
                ds.PatientID = "RET-1"

            files.append(
                write_ct(
                    root / name / f"{i}.dcm",
                    study=arc.study,
                    series=series,
                    sop=sop,
                    position=(0.0, 0.0, 2.0 * i),
                    instance_number=i + 1,
                    pixel_spacing="0.4\\0.6",
                    extra=extra,
                )
            )
    results = send_files(node.port, files)
    assert all(r.status is not None and status.is_stored(r.status) for r in results), results
    yield arc
    node.stop(grace_s=2)
    dest.stop()
    pacs.stop()


def _identifier(level: str, **keys: str) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    return ds


def _requestor() -> AE:
    ae = AE(ae_title="RETRSCU")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    return ae


def c_move(port: int, query: Dataset, dest: str, model: Any = None) -> list[Dataset]:
    model = model or StudyRootQueryRetrieveInformationModelMove
    ae = _requestor()
    ae.add_requested_context(model)
    assoc = ae.associate("127.0.0.1", port, ae_title="SPACING_SCP")
    assert assoc.is_established
    try:
        return [st for st, _ in assoc.send_c_move(query, dest, model)]
    finally:
        assoc.release()


def _check_corrected(files: list[Path], archive: Archive) -> None:
    by_sop = {str(ds.SOPInstanceUID): ds for ds in (dcmread(p) for p in files)}
    assert set(by_sop) == set(archive.sops["S1"] + archive.sops["S2"])
    for sop in archive.sops["S1"]:
        ds = by_sop[sop]
        assert [str(v) for v in ds.PixelSpacing] == ["0.6", "0.4"]  # as the node stored it
        original = ds.OriginalAttributesSequence[0].ModifiedAttributesSequence[0]
        assert [str(v) for v in original.PixelSpacing] == ["0.4", "0.6"]  # the edit record
    for sop in archive.sops["S2"]:
        assert [str(v) for v in by_sop[sop].PixelSpacing] == ["0.4", "0.6"]
        assert "OriginalAttributesSequence" not in by_sop[sop]


@pytest.mark.dcmtk
def test_movescu_moves_a_study_with_the_corrections(archive: Archive) -> None:
    before = set(archive.dest.files())
    done = subprocess.run(
        [
            dcmtk_tool("movescu"),
            "-S",
            "-aet",
            "MOVESCU",
            "-aec",
            "SPACING_SCP",
            "-aem",
            "MOVEDEST",
            "-k",
            "QueryRetrieveLevel=STUDY",
            "-k",
            f"StudyInstanceUID={archive.study}",
            "127.0.0.1",
            str(archive.node.port),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=dcmtk_env(),
    )
    assert done.returncode == 0, done.stderr + done.stdout
    new = [p for p in archive.dest.files() if p not in before]
    assert len(new) == 6
    _check_corrected(new, archive)


@pytest.mark.dcmtk
def test_getscu_gets_a_series_and_a_study(archive: Archive, tmp_path: Path) -> None:
    def getscu(out: Path, *keys: str) -> list[Path]:
        out.mkdir()
        args = [dcmtk_tool("getscu"), "-S", "-aet", "GETSCU", "-aec", "SPACING_SCP"]
        args += ["-od", str(out)]
        for key in keys:
            args += ["-k", key]
        args += ["127.0.0.1", str(archive.node.port)]
        done = subprocess.run(args, capture_output=True, text=True, timeout=120, env=dcmtk_env())
        assert done.returncode == 0, done.stderr + done.stdout
        return sorted(out.iterdir())

    series = getscu(
        tmp_path / "series",
        "QueryRetrieveLevel=SERIES",
        f"StudyInstanceUID={archive.study}",
        f"SeriesInstanceUID={archive.series['S1']}",
    )
    assert sorted(str(dcmread(p).SOPInstanceUID) for p in series) == sorted(archive.sops["S1"])
    study = getscu(
        tmp_path / "study", "QueryRetrieveLevel=STUDY", f"StudyInstanceUID={archive.study}"
    )
    _check_corrected(study, archive)


def test_c_get_counts_and_statuses(archive: Archive) -> None:
    received: list[str] = []

    def on_store(event: Any) -> int:
        received.append(str(event.request.AffectedSOPInstanceUID))
        return 0x0000

    ae = _requestor()
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    roles = []
    for cx in StoragePresentationContexts[:100]:
        ae.add_requested_context(cx.abstract_syntax)
        roles.append(build_role(cx.abstract_syntax, scp_role=True))
    assoc = ae.associate(
        "127.0.0.1",
        archive.node.port,
        ae_title="SPACING_SCP",
        ext_neg=roles,
        evt_handlers=[(evt.EVT_C_STORE, on_store)],
    )
    assert assoc.is_established
    try:
        query = _identifier("SERIES", SeriesInstanceUID=archive.series["S2"])  # relational
        responses = [
            st for st, _ in assoc.send_c_get(query, StudyRootQueryRetrieveInformationModelGet)
        ]
    finally:
        assoc.release()
    assert [int(r.Status) for r in responses] == [0xFF00, 0xFF00, 0x0000]
    assert [int(r.NumberOfRemainingSuboperations) for r in responses[:2]] == [1, 0]
    assert int(responses[-1].NumberOfCompletedSuboperations) == 2
    assert sorted(received) == sorted(archive.sops["S2"])


def test_c_move_unknown_destination_and_bad_identifier(archive: Archive) -> None:
    query = _identifier("STUDY", StudyInstanceUID=archive.study)
    (rsp,) = c_move(archive.node.port, query, "NOBODY")
    assert rsp.Status == 0xA801
    (rsp,) = c_move(
        archive.node.port, _identifier("SERIES", StudyInstanceUID=archive.study), "PYPACS"
    )
    assert rsp.Status == status.FIND_ERROR_IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS
    assert rsp.ErrorComment == "SERIES retrieve needs SeriesInstanceUID (PS3.4 C.4.2.1.4)"


def test_c_move_patient_root_image_level(archive: Archive) -> None:
    sop = archive.sops["S1"][1]
    query = _identifier("IMAGE", PatientID="RET-1", StudyInstanceUID=archive.study)
    query.SeriesInstanceUID = archive.series["S1"]
    query.SOPInstanceUID = sop
    responses = c_move(
        archive.node.port, query, "PYPACS", PatientRootQueryRetrieveInformationModelMove
    )
    assert int(responses[-1].Status) == 0x0000
    assert int(responses[-1].NumberOfCompletedSuboperations) == 1
    assert sop in archive.pacs.uids()


def test_c_move_partial_failure_lists_the_failed_instance(archive: Archive, tmp_path: Path) -> None:
    # A stored file gone from disk: its sub-operation fails, the others complete.
    from sqlalchemy import select

    from storage.models import Instance

    victim = archive.sops["S2"][0]
    with archive.node.sessions() as session:
        relpath = session.execute(
            select(Instance.path).where(Instance.sop_instance_uid == victim)
        ).scalar_one()
    path = archive.node.store.path(relpath)
    moved = path.rename(tmp_path / "away.dcm")
    try:
        ae = _requestor()
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
        assoc = ae.associate("127.0.0.1", archive.node.port, ae_title="SPACING_SCP")
        query = _identifier("SERIES", StudyInstanceUID=archive.study)
        query.SeriesInstanceUID = archive.series["S2"]
        answers = list(
            assoc.send_c_move(query, "PYPACS", StudyRootQueryRetrieveInformationModelMove)
        )
        assoc.release()
    finally:
        moved.rename(path)
    final, identifier = answers[-1]
    assert int(final.Status) == 0xB000
    assert int(final.NumberOfFailedSuboperations) == 1
    assert int(final.NumberOfCompletedSuboperations) == 1
    assert identifier.FailedSOPInstanceUIDList == victim


@pytest.mark.parametrize("requester_max_pdu", [1024 * 1024, 0])
def test_c_get_of_a_large_instance_keeps_node_memory_flat(
    node_process: Any, tmp_path: Path, requester_max_pdu: int
) -> None:
    """A 300 MB multi-frame instance fetched by C-GET: the node's peak RSS during the
    retrieve stays < 100 MB above its RSS before it (the file is streamed from disk), also
    for a requester that announces no PDU limit (0)."""
    from tests.dicom_factory import write_large_multiframe

    src = write_large_multiframe(tmp_path / "big.dcm", megabytes=300)
    node = node_process(data_dir=tmp_path / "data")
    [res] = send_files(node.port, [src])
    assert res.status == status.SUCCESS
    ds = dcmread(src, stop_before_pixels=True)
    assert node.proc is not None
    time.sleep(0.5)
    Path(f"/proc/{node.proc.pid}/clear_refs").write_text("5")  # reset VmHWM
    before_kb = node.rss_kb("VmRSS")
    size = 0

    def on_store(event: Any) -> int:
        nonlocal size
        size = Path(event.dataset_path).stat().st_size
        return 0x0000

    from pynetdicom import _config

    recv_chunked = _config.STORE_RECV_CHUNKED_DATASET
    _config.STORE_RECV_CHUNKED_DATASET = True  # the requester writes to disk too
    try:
        ae = _requestor()
        ae.maximum_pdu_size = requester_max_pdu
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
        # the stored syntax (a re-encoding would load the instance, section 4.2.6)
        ae.add_requested_context(str(ds.SOPClassUID), [str(ds.file_meta.TransferSyntaxUID)])
        assoc = ae.associate(
            "127.0.0.1",
            node.port,
            ae_title="SPACING_SCP",
            ext_neg=[build_role(str(ds.SOPClassUID), scp_role=True)],
            evt_handlers=[(evt.EVT_C_STORE, on_store)],
        )
        query = _identifier("IMAGE", SOPInstanceUID=str(ds.SOPInstanceUID))
        started = time.monotonic()
        answers = [
            st for st, _ in assoc.send_c_get(query, StudyRootQueryRetrieveInformationModelGet)
        ]
        seconds = time.monotonic() - started
        assoc.release()
    finally:
        _config.STORE_RECV_CHUNKED_DATASET = recv_chunked
    assert int(answers[-1].Status) == 0x0000 and size >= 300 * 1024 * 1024
    peak_kb = node.rss_kb("VmHWM")
    print(
        f"C-GET of {size / 2**20:.0f} MiB in {seconds:.1f} s: node RSS before {before_kb} kB, "
        f"peak {peak_kb} kB"
    )
    assert (peak_kb - before_kb) < 100 * 1024, (before_kb, peak_kb)
    assert node.stop() == 0


def test_c_get_cancel_stops_between_sub_operations(archive: Archive) -> None:
    """C-CANCEL-GET-RQ (PS3.7 9.3.3.3): the node stops before the next sub-operation and
    answers Cancel (0xFE00) with the counts so far."""
    ae = _requestor()
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    ae.add_requested_context(CTImageStorage)
    got: list[str] = []
    assoc: Any = None

    def on_store(event: Any) -> int:
        got.append(str(event.request.AffectedSOPInstanceUID))
        if len(got) == 1:  # cancel while the first sub-operation is being answered
            assoc.send_c_cancel(1, query_model=StudyRootQueryRetrieveInformationModelGet)
        return 0x0000

    assoc = ae.associate(
        "127.0.0.1",
        archive.node.port,
        ae_title="SPACING_SCP",
        ext_neg=[build_role(CTImageStorage, scp_role=True)],
        evt_handlers=[(evt.EVT_C_STORE, on_store)],
    )
    query = _identifier("STUDY", StudyInstanceUID=archive.study)
    answers = [
        st for st, _ in assoc.send_c_get(query, StudyRootQueryRetrieveInformationModelGet, msg_id=1)
    ]
    assoc.release()
    final = answers[-1]
    assert int(final.Status) == status.FIND_CANCEL
    assert int(final.NumberOfCompletedSuboperations) == len(got) < 6
    assert int(final.NumberOfRemainingSuboperations) == 6 - len(got)


def test_c_move_transcodes_losslessly_when_the_peer_refuses_the_stored_syntax(
    node_factory: Any, tmp_path: Path
) -> None:
    """Stored RLE Lossless and Explicit VR Little Endian; dcmtk's storescp accepts only
    Implicit VR Little Endian: the RLE instance is decompressed, the other re-encoded,
    both pixel-identical."""
    import numpy as np
    from pydicom.uid import ImplicitVRLittleEndian, RLELossless

    from tests.dicom_factory import ct_dataset, write

    study, series = new_uid(), new_uid()
    rle = ct_dataset(study=study, series=series, instance_number=1)
    write(rle, tmp_path / "native.dcm")  # file meta for compress()
    rle.compress(RLELossless, generate_instance_uid=False)
    files = [
        write(rle, tmp_path / "rle.dcm", RLELossless),
        write_ct(tmp_path / "plain.dcm", study=study, series=series, instance_number=2),
    ]
    # dcmtk in its own process: an in-process pynetdicom SCP would share the node's
    # process-wide pynetdicom settings (unrestricted storage accepts any syntax)
    pacs = DcmtkPacs(tmp_path / "implicit", ae_title="IMPLICIT", accept="+xi")
    try:
        cfg = make_config(tmp_path / "data")
        cfg.move_destinations = [Peer(ae_title="IMPLICIT", host="127.0.0.1", port=pacs.port)]
        node = node_factory(cfg)
        results = send_files(node.port, files)
        assert all(r.status == status.SUCCESS for r in results), results
        responses = c_move(node.port, _identifier("SERIES", SeriesInstanceUID=series), "IMPLICIT")
        assert int(responses[-1].Status) == 0x0000, responses[-1]
        assert int(responses[-1].NumberOfCompletedSuboperations) == 2
        by_uid = {str(ds.SOPInstanceUID): ds for ds in map(dcmread, pacs.files())}
        for source in files:
            sent = dcmread(source)
            got = by_uid[str(sent.SOPInstanceUID)]
            assert got.file_meta.TransferSyntaxUID == ImplicitVRLittleEndian
            assert np.array_equal(got.pixel_array, sent.pixel_array)
    finally:
        pacs.stop()
