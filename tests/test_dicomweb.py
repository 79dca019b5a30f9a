"""Issue 18: DICOMweb (QIDO-RS, WADO-RS, STOW-RS) against a running node, with
``dicomweb-client`` as the client; answers compared with C-FIND and the stored files."""

from __future__ import annotations

import http.client
import json
import socket
from pathlib import Path
from typing import Any

import pytest
from dicomweb_client.api import DICOMwebClient
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames
from pynetdicom import AE

from scp import status
from scp.pipeline.policy import SwapRule
from tests.conftest import PYDICOM_TEST_FILES, make_config, send_files
from tests.dicom_factory import ct_dataset, new_uid, write
from tests.series_builders import regular, write_series

STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"


def client(node: Any, token: str | None = None) -> DICOMwebClient:
    headers = {"Authorization": f"Bearer {token}"} if token else None
    assert node.api is not None
    return DICOMwebClient(f"http://127.0.0.1:{node.api.port}/dicom-web", headers=headers)


def series_files(tmp_path: Path, n: int = 3, **kwargs: Any) -> list[Path]:
    study, series = new_uid(), new_uid()
    return [
        write(
            ct_dataset(
                study=study,
                series=series,
                instance_number=i + 1,
                position=(0, 0, i * 1.0),
                **kwargs,
            ),
            tmp_path / f"ct{i}.dcm",
        )
        for i in range(n)
    ]


def raw_request(
    node: Any, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", node.api.port, timeout=30)
    conn.request(method, path, body=body, headers=headers or {})
    rsp = conn.getresponse()
    data = rsp.read()
    conn.close()
    return rsp.status, {k.lower(): v for k, v in rsp.getheaders()}, data


def multipart(parts: list[tuple[str, bytes]], boundary: str = "b0undary") -> bytes:
    out = b""
    for content_type, data in parts:
        out += f"--{boundary}\r\nContent-Type: {content_type}\r\n\r\n".encode() + data + b"\r\n"
    return out + f"--{boundary}--\r\n".encode()


def stored_files(node: Any) -> list[Path]:
    return sorted(p for p in (node.cfg.data_dir / "instances").rglob("*") if p.is_file())


def tmp_leftovers(node: Any) -> list[Path]:
    return [p for p in node.store.tmp.rglob("*") if p.is_file()]


# -- STOW-RS -------------------------------------------------------------------------------


def test_stow_with_dicomweb_client_goes_through_ingest(node: Any, tmp_path: Path) -> None:
    files = series_files(tmp_path, pixel_spacing="0.5\\0.5")
    web = client(node)
    datasets = [dcmread(p) for p in files]
    rsp = web.store_instances(datasets)
    refs = rsp.ReferencedSOPSequence
    assert {r.ReferencedSOPInstanceUID for r in refs} == {d.SOPInstanceUID for d in datasets}
    assert "FailedSOPSequence" not in rsp
    assert rsp.RetrieveURL.endswith(f"/studies/{datasets[0].StudyInstanceUID}")
    # the same index a C-STORE writes: the series API and C-FIND see them
    assert len(stored_files(node)) == 3
    found = web.search_for_instances(study_instance_uid=datasets[0].StudyInstanceUID)
    assert len(found) == 3
    assert tmp_leftovers(node) == []


def test_stow_coercion_is_a_warning_reason(node_factory: Any, tmp_path: Path) -> None:
    # a swap rule corrects Pixel Spacing: C-STORE answers 0xB000, STOW-RS 202 with the same
    # status as the Warning Reason
    cfg = make_config(tmp_path / "data")
    cfg.swap_rules = [SwapRule(name="acme writes columns first", match={"Manufacturer": "ACME"})]
    node = node_factory(cfg)
    over_dimse = write(ct_dataset(pixel_spacing="0.5\\0.6"), tmp_path / "c1.dcm")
    over_web = write(ct_dataset(pixel_spacing="0.5\\0.6"), tmp_path / "c2.dcm")
    dimse = send_files(node.port, [over_dimse])
    code, _, data = raw_request(
        node,
        "POST",
        "/dicom-web/studies",
        multipart([("application/dicom", over_web.read_bytes())]),
        {"Content-Type": 'multipart/related; type="application/dicom"; boundary=b0undary'},
    )
    assert dimse[0].status == status.WARNING_COERCION_OF_DATA_ELEMENTS
    assert code == 202
    (ref,) = Dataset.from_json(json.loads(data)).ReferencedSOPSequence
    assert ref.WarningReason == status.WARNING_COERCION_OF_DATA_ELEMENTS


def test_stow_study_mismatch_and_not_dicom_are_failed_sops(node: Any, tmp_path: Path) -> None:
    good = write(ct_dataset(), tmp_path / "good.dcm")
    study = dcmread(good).StudyInstanceUID
    other = write(ct_dataset(), tmp_path / "other.dcm")
    body = multipart(
        [
            ("application/dicom", good.read_bytes()),
            ("application/dicom", other.read_bytes()),
            ("application/dicom", b"this is not DICOM at all" * 10),
        ]
    )
    code, headers, data = raw_request(
        node,
        "POST",
        f"/dicom-web/studies/{study}",
        body,
        {"Content-Type": 'multipart/related; type="application/dicom"; boundary=b0undary'},
    )
    assert code == 202
    assert headers["content-type"].startswith("application/dicom+json")
    rsp = Dataset.from_json(json.loads(data))
    assert [r.ReferencedSOPInstanceUID for r in rsp.ReferencedSOPSequence] == [
        dcmread(good).SOPInstanceUID
    ]
    reasons = sorted(f.FailureReason for f in rsp.FailedSOPSequence)
    assert reasons == sorted(
        [status.ERROR_DATASET_DOES_NOT_MATCH_SOP_CLASS, status.ERROR_CANNOT_UNDERSTAND]
    )
    assert len(stored_files(node)) == 1
    assert tmp_leftovers(node) == []


def test_stow_nothing_stored_is_409(node: Any) -> None:
    body = multipart([("application/dicom", b"\x00" * 300)])
    code, _, data = raw_request(
        node,
        "POST",
        "/dicom-web/studies",
        body,
        {"Content-Type": 'multipart/related; type="application/dicom"; boundary=b0undary'},
    )
    assert code == 409
    rsp = Dataset.from_json(json.loads(data))
    assert rsp.FailedSOPSequence[0].FailureReason == status.ERROR_CANNOT_UNDERSTAND


@pytest.mark.parametrize(
    ("content_type", "body", "expected"),
    [
        ("application/dicom", b"x", 415),
        ('multipart/related; type="application/dicom+xml"; boundary=b', b"x", 415),
        ('multipart/related; type="application/dicom"', b"x", 400),  # no boundary
        ('multipart/related; type="application/dicom"; boundary=b0undary', b"garbage", 400),
        (
            'multipart/related; type="application/dicom"; boundary=b0undary',
            b"--b0undary--\r\n",
            400,
        ),
    ],
)
def test_stow_malformed_bodies_get_a_problem(
    node: Any, content_type: str, body: bytes, expected: int
) -> None:
    code, headers, data = raw_request(
        node, "POST", "/dicom-web/studies", body, {"Content-Type": content_type}
    )
    assert code == expected
    assert headers["content-type"] == "application/problem+json"
    assert json.loads(data)["detail"]
    assert stored_files(node) == []
    assert tmp_leftovers(node) == []


def test_stow_body_cut_short_stores_nothing(node: Any, tmp_path: Path) -> None:
    good = write(ct_dataset(), tmp_path / "good.dcm").read_bytes()
    body = multipart([("application/dicom", good), ("application/dicom", good)])
    cut = body[: len(body) - 200]
    # a body shorter than its Content-Length: the client goes away
    with socket.create_connection(("127.0.0.1", node.api.port)) as sock:
        head = (
            "POST /dicom-web/studies HTTP/1.1\r\nHost: x\r\n"
            'Content-Type: multipart/related; type="application/dicom"; boundary=b0undary\r\n'
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        sock.sendall(head.encode() + cut)
        sock.shutdown(socket.SHUT_WR)
        sock.settimeout(10)
        try:
            while sock.recv(65536):
                pass
        except OSError:
            pass
    # and a complete body whose closing delimiter is missing
    code, _, data = raw_request(
        node,
        "POST",
        "/dicom-web/studies",
        body[: body.rindex(b"--b0undary--")],
        {"Content-Type": 'multipart/related; type="application/dicom"; boundary=b0undary'},
    )
    assert code == 400
    assert "closing boundary" in json.loads(data)["detail"]
    assert stored_files(node) == []
    assert tmp_leftovers(node) == []


def test_stow_needs_the_token(node_factory: Any, tmp_path: Path) -> None:
    node = node_factory(http={"token": "s3cret"})
    path = write(ct_dataset(), tmp_path / "a.dcm")
    with pytest.raises(Exception, match="401"):
        client(node).store_instances([dcmread(path)])
    assert client(node, "s3cret").store_instances([dcmread(path)]).ReferencedSOPSequence
    code, _, _ = raw_request(node, "GET", "/dicom-web/studies")
    assert code == 401


def test_other_write_methods_stay_405(node: Any) -> None:
    code, headers, _ = raw_request(node, "DELETE", "/dicom-web/studies/1.2.3")
    assert code == 405
    assert "POST" in headers["allow"]
    code, _, _ = raw_request(node, "POST", "/series")
    assert code == 405


# -- QIDO-RS -------------------------------------------------------------------------------


def c_find(node: Any, level: str, **keys: Any) -> list[Dataset]:
    ae = AE(ae_title="FINDSCU")
    ae.add_requested_context(STUDY_ROOT_FIND)
    assoc = ae.associate("127.0.0.1", node.port, ae_title="SPACING_SCP")
    assert assoc.is_established
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for k, v in keys.items():
        setattr(ds, k, v)
    out = [
        i
        for st, i in assoc.send_c_find(ds, STUDY_ROOT_FIND)
        if i is not None and st.Status in (0xFF00, 0xFF01)
    ]
    assoc.release()
    return out


def test_qido_matches_c_find(node: Any, tmp_path: Path) -> None:
    files = series_files(tmp_path, pixel_spacing="0.703125\\0.703125")
    other = write(
        ct_dataset(modality="MR", pixel_spacing="0.9765625\\0.9765625"), tmp_path / "mr.dcm"
    )
    send_files(node.port, [*files, other])
    web = client(node)
    study = dcmread(files[0]).StudyInstanceUID
    studies = web.search_for_studies(search_filters={"PatientID": "TEST-1"})
    assert {s["0020000D"]["Value"][0] for s in studies} == {
        d.StudyInstanceUID for d in c_find(node, "STUDY", PatientID="TEST-1", StudyInstanceUID="")
    }
    (ct,) = web.search_for_series(search_filters={"Modality": "CT"})
    found = c_find(
        node, "SERIES", StudyInstanceUID=study, SeriesInstanceUID="", SpacingBetweenSlices=""
    )
    assert ct["00180088"]["Value"][0] == pytest.approx(float(found[0].SpacingBetweenSlices))
    assert ct["00180088"]["Value"][0] == pytest.approx(1.0)
    assert ct["00091010"]["Value"] == ["ok"]
    # date range, wildcard, limit/offset, includefield, tags
    assert len(web.search_for_studies(search_filters={"StudyDate": "20260101-20261231"})) == 2
    assert web.search_for_studies(search_filters={"StudyDate": "20270101-"}) == []
    assert len(web.search_for_instances(study_instance_uid=study, limit=2)) == 2
    assert len(web.search_for_instances(study_instance_uid=study, offset=2)) == 1
    inst = web.search_for_instances(search_filters={"00080060": "C*"}, fields=["Rows"])
    assert len(inst) == 3 and inst[0]["00280010"]["Value"] == [16]
    # rule 31: 0.703 agrees with 0.703125; 0.70 too; 0.704 does not
    assert len(web.search_for_instances(search_filters={"PixelSpacing": "0.703"})) == 3
    assert web.search_for_instances(search_filters={"PixelSpacing": "0.704"}) == []
    # the extension ranges
    code, _, data = raw_request(node, "GET", "/dicom-web/series?spacing_between_slices_mm=0.5-1.25")
    assert code == 200 and len(json.loads(data)) == 1
    code, _, data = raw_request(node, "GET", "/dicom-web/instances?pixel_spacing_mm=-0.8")
    assert code == 200 and len(json.loads(data)) == 3
    code, _, _ = raw_request(node, "GET", "/dicom-web/series?verdict=invalid")
    assert code == 204


def test_qido_bad_parameters_are_400(node: Any) -> None:
    for query in (
        "colour=red",
        "limit=0",
        "StudyDate=yesterday",
        "verdict=great",
        "pixel_spacing_mm=a-b",
    ):
        code, headers, _ = raw_request(node, "GET", f"/dicom-web/studies?{query}")
        assert code == 400, query
        assert headers["content-type"] == "application/problem+json"
    code, headers, _ = raw_request(node, "GET", "/dicom-web/studies?fuzzymatching=true")
    assert code == 204 and "299" in headers["warning"]


# -- WADO-RS -------------------------------------------------------------------------------


def test_wado_instances_metadata_frames(node: Any, tmp_path: Path) -> None:
    files = series_files(tmp_path)
    send_files(node.port, files)
    web = client(node)
    d0 = dcmread(files[0])
    study, series, sop = d0.StudyInstanceUID, d0.SeriesInstanceUID, d0.SOPInstanceUID
    stored = {dcmread(p).SOPInstanceUID: p.read_bytes() for p in stored_files(node)}
    inst = web.retrieve_instance(study, series, sop)
    assert inst.SOPInstanceUID == sop and inst.PixelData == d0.PixelData
    got = web.retrieve_series(study, series)
    assert {d.SOPInstanceUID for d in got} == set(stored)
    assert len(web.retrieve_study(study)) == 3
    (meta,) = web.retrieve_instance_metadata(study, series, sop) and [
        web.retrieve_instance_metadata(study, series, sop)
    ]
    assert meta["00080018"]["Value"] == [sop]
    assert "BulkDataURI" in meta["7FE00010"]
    assert len(web.retrieve_series_metadata(study, series)) == 3
    (frame,) = web.retrieve_instance_frames(study, series, sop, [1])
    assert frame == d0.PixelData
    # transcoding is not offered
    code, _, _ = raw_request(
        node,
        "GET",
        f"/dicom-web/studies/{study}",
        headers={
            "Accept": 'multipart/related; type="application/dicom"; '
            "transfer-syntax=1.2.840.10008.1.2.4.50"
        },
    )
    assert code == 406
    code, _, _ = raw_request(
        node, "GET", f"/dicom-web/studies/{study}/series/{series}/instances/{sop}/frames/2"
    )
    assert code == 400
    code, _, _ = raw_request(node, "GET", "/dicom-web/studies/1.2.3")
    assert code == 404
    xml = {"Accept": "application/dicom+xml"}
    for path in (f"/dicom-web/studies/{study}/metadata", "/dicom-web/studies"):
        code, _, _ = raw_request(node, "GET", path, headers=xml)
        assert code == 406, path


@pytest.mark.parametrize(
    ("name", "image_type"),
    [("MR_small_RLE.dcm", "image/dicom-rle"), ("SC_rgb_jpeg_dcmtk.dcm", "image/jpeg")],
)
def test_wado_frames_of_encapsulated_pixel_data(node: Any, name: str, image_type: str) -> None:
    src = PYDICOM_TEST_FILES / name
    assert send_files(node.port, [src])[0].status in (0x0000, 0xB000)
    ds = dcmread(src)
    expected = list(
        generate_frames(ds.PixelData, number_of_frames=int(ds.get("NumberOfFrames", 1)))
    )
    web = client(node)
    args = (ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID, [1])
    # in its own media type, or as application/octet-stream with transfer-syntax=*
    assert web.retrieve_instance_frames(*args, media_types=(image_type,)) == expected[:1]
    octet = web.retrieve_instance_frames(*args, media_types=(("application/octet-stream", "*"),))
    assert octet == expected[:1]
    # the default application/octet-stream means Explicit VR Little Endian: not transcoded
    code, _, data = raw_request(
        node,
        "GET",
        f"/dicom-web/studies/{args[0]}/series/{args[1]}/instances/{args[2]}/frames/1",
        headers={"Accept": 'multipart/related; type="application/octet-stream"'},
    )
    assert code == 406 and "transcode" in json.loads(data)["detail"]
    # the instance itself goes out in its stored transfer syntax
    (got,) = web.retrieve_series(ds.StudyInstanceUID, ds.SeriesInstanceUID)
    assert got.file_meta.TransferSyntaxUID == ds.file_meta.TransferSyntaxUID
    assert got.PixelData == ds.PixelData


def test_qido_thin_slice_series_without_missing_slices(node: Any, tmp_path: Path) -> None:
    """The AI pipeline's question in one request: thin-slice CT series, no missing slice."""
    positions = regular(12)
    whole_uid, whole = write_series(tmp_path / "whole", positions)
    del positions[5]
    gap_uid, gapped = write_series(tmp_path / "gap", positions)
    send_files(node.port, [*whole, *gapped])
    web = client(node)
    (missing,) = web.search_for_series(search_filters={"finding": "SLICE_MISSING"})
    assert missing["0020000E"]["Value"] == [gap_uid]
    assert "SLICE_MISSING" in missing["00091011"]["Value"]
    thin = web.search_for_series(
        search_filters={"spacing_between_slices_mm": "-1.25", "Modality": "CT"}
    )
    assert {s["0020000E"]["Value"][0] for s in thin} == {whole_uid, gap_uid}
    code, _, data = raw_request(
        node,
        "GET",
        "/dicom-web/series?Modality=CT&spacing_between_slices_mm=-1.25&finding=!SLICE_MISSING",
    )
    assert code == 200
    assert [s["0020000E"]["Value"][0] for s in json.loads(data)] == [whole_uid]
    # the measured spacing in the answer is what C-FIND says
    (series_hit,) = [s for s in thin if s["0020000E"]["Value"][0] == whole_uid]
    study = series_hit["0020000D"]["Value"][0]
    (found,) = c_find(
        node, "SERIES", StudyInstanceUID=study, SeriesInstanceUID=whole_uid, SpacingBetweenSlices=""
    )
    assert series_hit["00180088"]["Value"][0] == pytest.approx(float(found.SpacingBetweenSlices))
    code, _, _ = raw_request(node, "GET", "/dicom-web/studies?verdict=ok")
    assert code == 400
