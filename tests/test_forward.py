"""Forwarding end to end: real associations to dcmtk's storescp and scripted pynetdicom SCPs."""

from __future__ import annotations

import json
import logging
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.dataset import FileMetaDataset
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    MRImageStorage,
    RLELossless,
    SecondaryCaptureImageStorage,
)
from pynetdicom import _config

from scp.cli import main as cli_main
from scp.config import Destination
from scp.pipeline.annotate import VERDICT, read_annotation
from scp.pipeline.policy import SwapRule
from storage import outbox, outbox_jobs
from storage.db import make_engine, make_session_factory
from tests.conftest import dataset_bytes, free_port, make_config, send_files
from tests.dicom_factory import ct_dataset, new_uid, write, write_ct
from tests.pacs import Blackhole, DcmtkPacs, Pacs, wait_until

FAST = {"poll_s": 0.2, "lease_s": 5.0}


def _dest(name: str, port: int, ae_title: str = "PACS", **kw: Any) -> Destination:
    kw.setdefault("retry_initial_s", 0.1)
    kw.setdefault("retry_max_s", 0.5)
    return Destination(name=name, ae_title=ae_title, host="127.0.0.1", port=port, **kw)


def _node(
    node_factory: Callable[..., Any],
    data_dir: Path,
    dests: list[Destination],
    **sections: dict[str, Any],
) -> Any:
    cfg = make_config(data_dir, forwarding=FAST, **sections)
    cfg.destinations = dests
    return node_factory(cfg)


def _jobs(node: Any, **filters: Any) -> list[dict[str, Any]]:
    with node.sessions() as session:
        items, _ = outbox_jobs.list_jobs(session, limit=1000, **filters)
    return items


def _settled(node: Any, count: int) -> Callable[[], bool]:
    def check() -> bool:
        jobs = _jobs(node)
        return len(jobs) == count and all(j["state"] in ("done", "dead") for j in jobs)

    return check


def _series(tmp_path: Path, n: int, **kw: Any) -> list[Path]:
    study, series = new_uid(), new_uid()
    return [
        write_ct(
            tmp_path / "in" / f"{series[-6:]}-{i}.dcm",
            study=study,
            series=series,
            instance_number=i + 1,
            position=(0.0, 0.0, float(i)),
            **kw,
        )
        for i in range(n)
    ]


def _get(node: Any, path: str) -> tuple[int, Any]:
    url = f"http://127.0.0.1:{node.api.port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=10) as rsp:
            body = rsp.read().decode()
            status = rsp.status
    except urllib.error.HTTPError as exc:
        body, status = exc.read().decode(), exc.code
    try:
        return status, json.loads(body)
    except json.JSONDecodeError:
        return status, body


# -- delivery -------------------------------------------------------------------------------


@pytest.mark.dcmtk
def test_series_reaches_dcmtk_storescp_annotated_in_its_transfer_syntax(
    node_factory: Callable[..., Any], tmp_path: Path
) -> None:
    pacs = DcmtkPacs(tmp_path / "pacs")
    try:
        node = _node(node_factory, tmp_path / "data", [_dest("pacs", pacs.port)])
        files = _series(tmp_path, 6)
        study = dcmread(files[0]).StudyInstanceUID
        series = dcmread(files[0]).SeriesInstanceUID
        implicit = ct_dataset(study=study, series=series, instance_number=7, position=(0, 0, 6))
        files.append(write(implicit, tmp_path / "in" / "implicit.dcm", ImplicitVRLittleEndian))
        rle = ct_dataset(study=study, series=series, instance_number=8, position=(0, 0, 7))
        rle.file_meta = FileMetaDataset()
        rle.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        rle.compress(RLELossless)
        files.append(write(rle, tmp_path / "in" / "rle.dcm", RLELossless))
        sent = {dcmread(f).SOPInstanceUID: f for f in files}

        assert [r.status for r in send_files(node.port, files)] == [0] * 8
        assert wait_until(lambda: len(pacs.files()) == 8 and _settled(node, 8)())
        time.sleep(0.3)
        assert len(pacs.files()) == 8
        for path in pacs.files():
            got = dcmread(path)
            src = dcmread(sent[got.SOPInstanceUID])
            assert got.file_meta.TransferSyntaxUID == src.file_meta.TransferSyntaxUID
            assert got.PixelData == src.PixelData
            block = read_annotation(got)
            assert block[VERDICT] == "ok", block
        assert {j["state"] for j in _jobs(node)} == {"done"}
    finally:
        pacs.stop()


def test_original_sends_received_bytes_annotated_sends_the_correction(
    node_factory: Callable[..., Any], tmp_path: Path
) -> None:
    orig_pacs, ann_pacs = Pacs(ae_title="ORIG").start(), Pacs(ae_title="ANN").start()
    try:
        cfg = make_config(tmp_path / "data", forwarding=FAST)
        cfg.swap_rules = [
            SwapRule(name="acme writes columns first", match={"Manufacturer": "ACME"})
        ]
        cfg.destinations = [
            _dest("orig", orig_pacs.port, "ORIG", send="original"),
            _dest("ann", ann_pacs.port, "ANN", calling_ae_title="SPACING_OUT"),
        ]
        node = node_factory(cfg)
        [src] = _series(tmp_path, 1, pixel_spacing="0.5\\0.6")
        uid = dcmread(src).SOPInstanceUID
        assert [r.status for r in send_files(node.port, [src])] == [0xB000]
        assert wait_until(lambda: uid in orig_pacs.uids() and uid in ann_pacs.uids())

        original = orig_pacs.by_uid()[uid]
        assert original.data == dataset_bytes(src)  # byte for byte as received
        assert original.transfer_syntax_uid == ExplicitVRLittleEndian
        assert read_annotation(original.dataset()) == {}

        annotated = ann_pacs.by_uid()[uid]
        ds = annotated.dataset()
        assert [float(v) for v in ds.PixelSpacing] == [0.6, 0.5]
        assert read_annotation(ds)[VERDICT] == "corrected"
        assert "OriginalAttributesSequence" in ds
        assert annotated.calling_ae_title == "SPACING_OUT"
        assert orig_pacs.by_uid()[uid].calling_ae_title == "SPACING_SCP"
    finally:
        orig_pacs.stop()
        ann_pacs.stop()


def test_pacs_down_then_up_everything_arrives_once(
    node_factory: Callable[..., Any],
    tmp_path: Path,
    database_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="spacing_scp.forward")
    pacs = Pacs(port=free_port())  # not listening yet
    node = _node(
        node_factory,
        tmp_path / "data",
        [_dest("pacs", pacs.port)],
        storage={"database_url": database_url},
    )
    files = _series(tmp_path, 8)
    assert {r.status for r in send_files(node.port, files)} == {0}
    # a resend while the first copy waits adds no second job
    assert {r.status for r in send_files(node.port, files[:3])} == {0}
    assert wait_until(lambda: any(j["attempts"] >= 2 for j in _jobs(node)))
    jobs = _jobs(node)
    assert len({j["sop_instance_uid"] for j in jobs}) == 8
    assert {j["state"] for j in jobs} <= {"pending", "in_flight"}
    assert any("TCP connection failed" in (j["last_error"] or "") for j in jobs)
    # The outage is one WARNING when the destination goes down, not one per job and retry.
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "destination down" in warnings[0], warnings
    pacs.start()
    try:
        assert wait_until(lambda: len(pacs.uids()) == 8 and _settled(node, 8)(), timeout=15)
        time.sleep(0.5)
        assert all(count == 1 for count in pacs.uids().values())
        assert len(pacs.attempts) == 8
        assert {j["state"] for j in _jobs(node)} == {"done"}
        # once delivered, a resend is forwarded again
        send_files(node.port, files[:1])
        assert wait_until(lambda: sum(pacs.uids().values()) == 9)
    finally:
        pacs.stop()


def test_sigkill_while_forwarding_then_restart_delivers_everything(
    node_process: Callable[..., Any], tmp_path: Path
) -> None:
    pacs = Pacs(delay_s=0.1).start()
    config = tmp_path / "node.toml"
    config.write_text(
        "[forwarding]\nlease_s = 1.5\npoll_s = 0.2\n\n"
        '[[destinations]]\nname = "pacs"\nae_title = "PACS"\nhost = "127.0.0.1"\n'
        f"port = {pacs.port}\nretry_initial_s = 0.2\nretry_max_s = 1.0\n"
    )
    data = tmp_path / "data"
    try:
        node = node_process(data_dir=data, config=config)
        files = _series(tmp_path, 20)
        every = {dcmread(f).SOPInstanceUID for f in files}
        assert {r.status for r in send_files(node.port, files)} == {0}
        assert wait_until(lambda: len(pacs.uids()) >= 4)
        node.stop(signal.SIGKILL)
        at_kill = set(pacs.uids())
        assert len(at_kill) < 20, "forwarding finished before the kill: make the PACS slower"

        node_process(data_dir=data, config=config)
        assert wait_until(lambda: set(pacs.uids()) == every, timeout=30)
        engine = make_engine(f"sqlite:///{data / 'index.sqlite3'}")
        sessions = make_session_factory(engine)

        def done() -> int:
            with sessions() as session:  # a new read transaction (snapshot) each time
                return int(outbox.summary(session)[0]["counts"]["done"])

        assert wait_until(lambda: done() == 20)
        with sessions() as session:
            jobs, _ = outbox_jobs.list_jobs(session, limit=100)
        engine.dispose()
        # the jobs in flight at the kill were taken over once their lease ran out
        assert any("taken over" in (j["last_error"] or "") for j in jobs)
    finally:
        pacs.stop()


def test_stop_gives_unsent_jobs_back_and_a_new_node_sends_them(
    node_factory: Callable[..., Any], tmp_path: Path
) -> None:
    pacs = Pacs(delay_s=0.25).start()
    try:
        cfg = make_config(tmp_path / "data", forwarding=FAST)
        cfg.destinations = [_dest("pacs", pacs.port)]
        node = node_factory(cfg)
        files = _series(tmp_path, 8)
        every = {dcmread(f).SOPInstanceUID for f in files}
        assert {r.status for r in send_files(node.port, files)} == {0}
        assert wait_until(lambda: len(pacs.attempts) >= 1)
        node.stop(grace_s=0.1)
        states = [j["state"] for j in _jobs(node)]
        assert "in_flight" not in states and "pending" in states and len(states) == 8
        assert all(j["attempts"] == 0 for j in _jobs(node) if j["state"] == "pending")

        node_factory(cfg)
        assert wait_until(lambda: set(pacs.uids()) == every, timeout=20)
    finally:
        pacs.stop()


# -- refusals and isolation -----------------------------------------------------------------


def test_failure_status_for_one_sop_class_ends_dead_the_others_done(
    node_factory: Callable[..., Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MR answered 0xA700 until max_attempts; RLE (transfer syntax) and Secondary Capture
    (SOP class) refused in negotiation; CT done."""
    pacs = Pacs(
        sop_classes=[CTImageStorage, MRImageStorage],
        transfer_syntaxes=[ExplicitVRLittleEndian, ImplicitVRLittleEndian],
        status_for=lambda sop_class: 0xA700 if sop_class == MRImageStorage else 0x0000,
    ).start()
    try:
        node = _node(node_factory, tmp_path / "data", [_dest("pacs", pacs.port, max_attempts=2)])
        # the node (same process) turned on pynetdicom's accept-anything mode; the PACS
        # must negotiate for real
        monkeypatch.setattr(_config, "UNRESTRICTED_STORAGE_SERVICE", False)
        ct = _series(tmp_path, 3)
        mr = _series(tmp_path, 2, modality="MR", sop_class=MRImageStorage)
        rle = ct_dataset()
        rle.file_meta = FileMetaDataset()
        rle.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        rle.compress(RLELossless)
        refused = [write(rle, tmp_path / "in" / "rle.dcm", RLELossless)]
        refused += _series(tmp_path, 1, modality="OT", sop_class=SecondaryCaptureImageStorage)
        assert {r.status for r in send_files(node.port, ct + mr + refused)} == {0}
        assert wait_until(_settled(node, 7))
        by_class: dict[str, list[dict[str, Any]]] = {}
        for job in _jobs(node):
            by_class.setdefault(job["sop_class_uid"], []).append(job)
        ct_uids = {dcmread(f).SOPInstanceUID for f in ct}
        assert {
            j["state"] for j in by_class[CTImageStorage] if j["sop_instance_uid"] in ct_uids
        } == {"done"}
        for job in by_class[MRImageStorage]:
            assert job["state"] == "dead" and job["attempts"] == 2
            assert job["last_status"] == 0xA700 and job["last_status_hex"] == "0xA700"
            assert "gave up after 2 attempts" in job["last_error"]
            assert "0xA700" in job["last_error"]
        [rle_job] = [j for j in by_class[CTImageStorage] if j["transfer_syntax_uid"] == RLELossless]
        assert rle_job["state"] == "dead" and rle_job["attempts"] == 1
        assert "no presentation context" in rle_job["last_error"]
        assert "does not transcode" in rle_job["last_error"]
        [sc_job] = by_class[SecondaryCaptureImageStorage]
        assert sc_job["state"] == "dead" and sc_job["attempts"] == 1
        assert "abstract syntax not supported" in sc_job["last_error"]
        mr_uids = {dcmread(f).SOPInstanceUID for f in mr}
        assert sorted(uid for uid, _ in pacs.attempts if uid in mr_uids) == sorted([*mr_uids] * 2)
        assert len(pacs.uids()) == 3
    finally:
        pacs.stop()


def test_a_hung_destination_does_not_slow_the_other(
    node_factory: Callable[..., Any], tmp_path: Path
) -> None:
    fast = Pacs(ae_title="FAST").start()
    hung = Blackhole()
    timings: dict[str, float] = {}
    try:
        for label, with_hung in (("alone", False), ("with_hung", True)):
            dests = [_dest("fast", fast.port, "FAST")]
            if with_hung:
                dests.append(_dest("hung", hung.port, "HUNG"))
            node = _node(node_factory, tmp_path / label, dests, node={"acse_timeout": 5})
            files = _series(tmp_path / label, 15)
            every = {dcmread(f).SOPInstanceUID for f in files}
            started = time.monotonic()
            assert {r.status for r in send_files(node.port, files)} == {0}
            assert wait_until(lambda e=every: e <= set(fast.uids()), timeout=20)  # type: ignore[misc]
            timings[label] = time.monotonic() - started
            if with_hung:
                hung_jobs = _jobs(node, destination="hung")
                assert len(hung_jobs) == 15
                assert {j["state"] for j in hung_jobs} <= {"pending", "in_flight"}
        print(f"delivery of 15 instances: {timings}")
        assert timings["with_hung"] < timings["alone"] * 1.5 + 0.5, timings
    finally:
        fast.stop()
        hung.close()


# -- routing --------------------------------------------------------------------------------


def test_filters_route_by_modality_and_hold_invalid_spacing_for_qa(
    node_factory: Callable[..., Any], tmp_path: Path
) -> None:
    ct_pacs, mr_pacs, qa = Pacs(ae_title="CTP").start(), Pacs(ae_title="MRP").start(), Pacs()
    qa.ae_title = "QA"
    qa.start()
    usable = ["ok", "info", "warning", "corrected"]
    try:
        node = _node(
            node_factory,
            tmp_path / "data",
            [
                _dest(
                    "ct", ct_pacs.port, "CTP", filter={"Modality": ["CT"], "worst_severity": usable}
                ),
                _dest("mr", mr_pacs.port, "MRP", filter={"Modality": ["MR"]}),
                _dest("qa", qa.port, "QA", filter={"finding_code": ["PIXEL_SPACING_INVALID"]}),
            ],
        )
        ct = _series(tmp_path, 3)
        mr = _series(tmp_path, 2, modality="MR", sop_class=MRImageStorage)
        bad = _series(tmp_path, 1, pixel_spacing="0\\0")
        uid = {f: dcmread(f).SOPInstanceUID for f in ct + mr + bad}
        assert {r.status for r in send_files(node.port, ct + mr + bad)} == {0}
        assert wait_until(_settled(node, 6))
        assert set(ct_pacs.uids()) == {uid[f] for f in ct}
        assert set(mr_pacs.uids()) == {uid[f] for f in mr}
        assert set(qa.uids()) == {uid[f] for f in bad}
        assert read_annotation(qa.by_uid()[uid[bad[0]]].dataset())[VERDICT] == "invalid"
        jobs = _jobs(node)
        assert not [
            j for j in jobs if j["sop_instance_uid"] == uid[bad[0]] and j["destination"] != "qa"
        ]
    finally:
        for p in (ct_pacs, mr_pacs, qa):
            p.stop()


# -- visibility and control -----------------------------------------------------------------


def test_http_endpoints_metrics_and_cli_status_retry_requeue(
    node_factory: Callable[..., Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    answer = {"status": 0xA700}
    pacs = Pacs(status_for=lambda _c: answer["status"]).start()
    data = tmp_path / "data"
    try:
        node = _node(node_factory, data, [_dest("pacs", pacs.port, max_attempts=1)])
        files = _series(tmp_path, 3)
        series = dcmread(files[0]).SeriesInstanceUID
        assert {r.status for r in send_files(node.port, files)} == {0}
        assert wait_until(_settled(node, 3))

        status, body = _get(node, "/forwarding")
        assert status == 200
        [pacs_row] = body["destinations"]
        assert pacs_row["counts"] == {"pending": 0, "in_flight": 0, "done": 0, "dead": 3}
        assert "0xA700" in pacs_row["last_error"]["message"]
        status, page = _get(node, "/forwarding/jobs?state=dead&destination=pacs&limit=2")
        assert status == 200 and len(page["items"]) == 2 and page["next"]
        status, rest = _get(node, f"/forwarding/jobs?state=dead&limit=2&cursor={page['next']}")
        assert len(rest["items"]) == 1 and rest["next"] is None
        ids = [j["id"] for j in page["items"] + rest["items"]]
        assert ids == sorted(ids, reverse=True) and len(set(ids)) == 3
        assert rest["items"][0]["series_instance_uid"] == series
        assert _get(node, "/forwarding/jobs?state=lost")[0] == 400
        assert _get(node, "/forwarding/jobs?colour=red")[0] == 400
        _, metrics = _get(node, "/metrics")
        assert 'spacing_scp_forward_jobs{destination="pacs",state="dead"} 3' in metrics
        assert 'spacing_scp_forward_sent_total{destination="pacs",outcome="dead"}' in metrics
        assert metrics.count("# TYPE spacing_scp_forward_jobs gauge") == 1
        _, spec = _get(node, "/openapi.json")
        assert {"/forwarding", "/forwarding/jobs"} <= set(spec["paths"])

        base = ["--data-dir", str(data)]
        assert cli_main(["forward", "status", "--json", *base]) == 0
        [row] = json.loads(capsys.readouterr().out)
        assert row["destination"] == "pacs" and row["counts"]["dead"] == 3
        assert cli_main(["forward", "status", *base]) == 0
        assert "pacs" in capsys.readouterr().out

        answer["status"] = 0x0000
        assert cli_main(["forward", "retry", "--dead", "--destination", "pacs", *base]) == 0
        assert "3 dead job(s) revived" in capsys.readouterr().out
        assert wait_until(lambda: len(pacs.uids()) == 3 and _settled(node, 3)())

        config = tmp_path / "cli.toml"
        config.write_text(
            '[[destinations]]\nname = "pacs"\nae_title = "PACS"\nhost = "127.0.0.1"\n'
            f"port = {pacs.port}\n"
        )
        args = ["forward", "requeue", "--series", series, "--destination", "pacs"]
        assert cli_main([*args, "--config", str(config), *base]) == 0
        assert f"3 instance(s) of {series} queued for pacs" in capsys.readouterr().out
        assert wait_until(lambda: sum(pacs.uids().values()) == 6 and _settled(node, 6)())
        assert cli_main([*args[:-1], "nowhere", "--config", str(config), *base]) == 2
        assert cli_main(["forward", "retry", "--destination", "nowhere", *base]) == 2
        bad = ["forward", "requeue", "--series", "1.2.3", "--destination", "pacs"]
        assert cli_main([*bad, "--config", str(config), *base]) == 2
    finally:
        pacs.stop()


def test_annotation_failure_sends_the_stored_instance_with_a_finding(
    node_factory: Callable[..., Any], tmp_path: Path
) -> None:
    """Every private block of group 0009 belongs to another creator, so the annotation
    cannot reserve one (``ValueError``): the instance goes out as stored, once, and carries
    the FORWARD_UNANNOTATED finding; the job is done, not retried until dead."""
    pacs = Pacs(ae_title="ANN").start()
    try:
        node = _node(node_factory, tmp_path / "data", [_dest("ann", pacs.port, "ANN")])
        ds = ct_dataset()
        for element in range(0x10, 0x100):
            ds.add_new((0x0009, element), "LO", f"OTHER {element:02X}")
        src = write(ds, tmp_path / "full-private.dcm")
        assert [r.status for r in send_files(node.port, [src])] == [0x0000]
        assert wait_until(_settled(node, 1))
        [job] = _jobs(node)
        assert (job["state"], job["attempts"]) == ("done", 1)
        got = pacs.by_uid()[ds.SOPInstanceUID]
        assert got.data == dataset_bytes(src)  # as stored (nothing to correct in it)
        assert read_annotation(got.dataset()) == {}
        status, inst = _get(node, f"/instances/{ds.SOPInstanceUID}")
        assert status == 200
        [finding] = [f for f in inst["findings"] if f["code"] == "FORWARD_UNANNOTATED"]
        assert finding["severity"] == "warning" and "ValueError" in finding["message"]
    finally:
        pacs.stop()
