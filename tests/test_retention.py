"""Retention (issue 20): policies, deletion by a person, consistency of what remains.

Real nodes on localhost ports, real SQLite files, a scripted pynetdicom PACS.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
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
from pydicom import dcmread
from sqlalchemy import func, select

from scp.config import Destination
from scp.services.retention import Undelivered
from storage import retention
from storage.models import Deletion, ForwardJob, Instance, PendingUnlink, Series
from storage.queries import NotFound
from tests.conftest import dcmtk_env, dcmtk_tool, free_port, make_config, send_files
from tests.dicom_factory import new_uid, write_ct
from tests.pacs import Pacs, wait_until

MIB = 1024 * 1024
REPO = Path(__file__).resolve().parents[1]
FAST_FORWARD = {"poll_s": 0.2, "lease_s": 5.0, "probe_interval_s": 0.5}


def _dest(port: int) -> Destination:
    return Destination(
        name="pacs",
        ae_title="PACS",
        host="127.0.0.1",
        port=port,
        retry_initial_s=0.1,
        retry_max_s=0.5,
    )


def _series(folder: Path, count: int, *, study: str | None = None, rows: int = 16) -> list[Path]:
    study = study or new_uid()
    series = new_uid()
    return [
        write_ct(
            folder / f"{series[-12:]}-{i:04d}.dcm",
            study=study,
            series=series,
            rows=rows,
            columns=rows,
            position=(0.0, 0.0, float(i)),
            instance_number=i + 1,
        )
        for i in range(count)
    ]


def _uid(path: Path, keyword: str = "SOPInstanceUID") -> str:
    return str(getattr(dcmread(path, stop_before_pixels=True), keyword))


def _count(node: Any, what: Any) -> int:
    with node.sessions() as session:
        return int(session.scalar(select(func.count()).select_from(what)) or 0)


def _store_files(node: Any) -> set[Path]:
    return {p for p in node.store.instances.rglob("*.dcm")}


def _indexed_paths(node: Any) -> set[Path]:
    with node.sessions() as session:
        return {node.store.path(p) for p in session.scalars(select(Instance.path))}


def _retention(**values: Any) -> dict[str, Any]:
    base = {"enabled": True, "interval_s": 0.5, "settle_s": 0, "min_free_mb": 0}
    base.update(values)
    return base


def test_manual_deletion_refuses_undelivered_unless_forced(
    node_factory: Callable[..., Any], tmp_path: Path
) -> None:
    """A person's deletion: refused while a destination has not confirmed, forced deletes
    and records it; a partly deleted series counts what remains; a whole series is 404."""
    cfg = make_config(tmp_path / "data", forwarding=FAST_FORWARD)
    cfg.destinations = [_dest(free_port())]  # nobody listens: the jobs stay pending
    node = node_factory(cfg)
    files = _series(tmp_path / "in", 6)
    assert {r.status for r in send_files(node.port, files)} == {0}
    series_uid = _uid(files[0], "SeriesInstanceUID")
    one = _uid(files[0])

    with pytest.raises(Undelivered, match="not yet confirmed"):
        node.retention.delete("instance", one, actor="test")
    assert _count(node, Instance) == 6 and _count(node, Deletion) == 0
    with pytest.raises(NotFound):
        node.retention.delete("series", "1.2.3.4", actor="test")

    done = node.retention.delete("instance", one, actor="cli:test", force=True, reason="wrong")
    assert (done.instances, done.forced) == (1, True)
    assert _count(node, Instance) == 5 and _count(node, ForwardJob) == 5
    assert _store_files(node) == _indexed_paths(node)
    assert _count(node, PendingUnlink) == 0
    with node.sessions() as session:
        [row] = session.scalars(select(Deletion))
        assert (row.level, row.sop_instance_uid, row.reason, row.actor, row.forced) == (
            "instance",
            one,
            "manual",
            "cli:test",
            True,
        )
        assert row.comment == "wrong" and row.instances == 1 and row.bytes > 0
        summary = node.queries.get_series(session, series_uid)
    assert summary["instance_count"] == 5 and summary["deleted_instances"] == 1

    node.retention.delete("series", series_uid, actor="test", force=True)
    assert _count(node, Instance) == 0 and _count(node, Series) == 0
    assert _store_files(node) == set()
    with node.sessions() as session, pytest.raises(NotFound):
        node.queries.get_series(session, series_uid)


def test_pacs_down_nothing_deleted_then_reclaimed(
    node_factory: Callable[..., Any], tmp_path: Path
) -> None:
    """With the PACS down nothing is deleted however full the store gets (keep_days = 0 and
    a store limit far below its size); once it is up and confirms, the space comes back."""
    port = free_port()
    cfg = make_config(
        tmp_path / "data",
        forwarding=FAST_FORWARD,
        retention=_retention(keep_days=0, max_store_mb=1),
    )
    cfg.destinations = [_dest(port)]
    node = node_factory(cfg)
    files = _series(tmp_path / "in", 40, rows=256)  # ~5.3 MB, over max_store_mb = 1
    assert {r.status for r in send_files(node.port, files)} == {0}
    assert not wait_until(lambda: _count(node, Deletion) > 0, timeout=3)
    assert _count(node, Instance) == 40 and len(_store_files(node)) == 40
    with node.sessions() as session:
        figures = retention.figures(session, only_when_delivered=True)
    assert figures.deletable_bytes == 0 and figures.undelivered_bytes > 1024 * 1024
    metrics = node._gauges()
    assert metrics["spacing_scp_store_deletable_bytes"] == 0
    assert metrics["spacing_scp_store_undelivered_bytes"] == figures.undelivered_bytes
    node.retention.floor_bytes = 1 << 60  # as if the disk were full: the node refuses, says why
    refusing = node.retention.status().refusing
    assert refusing is not None and "0xA700" in refusing
    assert "wait for a destination to confirm them" in refusing
    assert node._gauges()["spacing_scp_store_refusing"] == 1
    node.retention.floor_bytes = 0

    pacs = Pacs(port=port)
    pacs.start()
    try:
        assert wait_until(
            lambda: _count(node, Instance) == 0 and not _store_files(node), timeout=30
        )
    finally:
        pacs.stop()
    assert len(pacs.stored) == 40
    assert _store_files(node) == set() and _count(node, PendingUnlink) == 0
    with node.sessions() as session:
        rows = list(session.scalars(select(Deletion)))
    assert {r.reason for r in rows} <= {"keep_days", "watermark"}
    assert sum(r.instances for r in rows) == 40
    gauges = node._gauges()
    assert sum(v for k, v in gauges.items() if k.startswith("spacing_scp_deleted_instances")) == 40


def test_http_delete_and_deletions(node_factory: Callable[..., Any], tmp_path: Path) -> None:
    """DELETE needs the token; 409 while undelivered, ``?force=true`` deletes; GET /deletions."""
    cfg = make_config(tmp_path / "data", forwarding=FAST_FORWARD, http={"token": "s3cret"})
    cfg.destinations = [_dest(free_port())]
    node = node_factory(cfg)
    files = _series(tmp_path / "in", 3)
    assert {r.status for r in send_files(node.port, files)} == {0}
    study = _uid(files[0], "StudyInstanceUID")
    base = f"http://127.0.0.1:{node.api.port}"

    def call(method: str, path: str, token: str | None = "s3cret") -> tuple[int, Any]:
        req = urllib.request.Request(base + path, method=method)
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(req) as rsp:
                return rsp.status, json.loads(rsp.read() or b"null")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")

    assert call("DELETE", f"/studies/{study}", token=None)[0] == 401
    code, body = call("DELETE", f"/studies/{study}")
    assert code == 409 and "not yet confirmed" in body["detail"]
    assert call("DELETE", "/series/1.2.3")[0] == 404
    code, body = call("DELETE", f"/studies/{study}?force=true&reason=test%20data")
    assert code == 200 and body["instances"] == 3 and body["forced"] is True
    assert _count(node, Instance) == 0 and _store_files(node) == set()
    code, body = call("GET", "/deletions")
    assert code == 200
    [item] = body["items"]
    assert item["reason"] == "manual" and item["study_instance_uid"] == study
    assert item["forced"] is True and item["comment"] == "test data"
    assert call("GET", f"/series/{_uid(files[0], 'SeriesInstanceUID')}")[0] == 404
    # QIDO-RS (over the C-FIND service) finds nothing of it any more
    req = urllib.request.Request(f"{base}/dicom-web/studies?StudyInstanceUID={study}")
    req.add_header("Authorization", "Bearer s3cret")
    with urllib.request.urlopen(req) as rsp:
        assert rsp.status == 204
    with urllib.request.urlopen(base + "/ui/deletions") as rsp:
        page = rsp.read().decode()
    assert study in page and "manual" in page and "test data" in page
    with urllib.request.urlopen(base + "/ui") as rsp:
        assert 'id="store-line"' in rsp.read().decode()


class _SinkPacs:
    """dcmtk's storescp answering Success and keeping nothing (``--ignore``)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen(
            [dcmtk_tool("storescp"), "-aet", "PACS", "--ignore", "+xa", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=dcmtk_env(),
        )
        assert wait_until(lambda: _listening(self.port), timeout=10), "storescp did not start"

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _send_w1_like(port: int, series: int, slices: int, rate_mb_s: float) -> list[int]:
    """W1-like 512 x 512 CT slices (512 KiB each), ``series`` series of ``slices``, one
    association per series, paced at about ``rate_mb_s`` MB/s; the statuses answered."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian
    from pynetdicom import AE

    from tests.dicom_factory import ct_dataset

    template = ct_dataset(rows=512, columns=512)
    template.file_meta = FileMetaDataset()
    template.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    statuses: list[int] = []
    started = time.monotonic()
    sent_bytes = 0
    for _ in range(series):
        ae = AE(ae_title="W1CT")
        ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
        assoc = ae.associate("127.0.0.1", port, ae_title="SPACING_SCP")
        assert assoc.is_established
        study, series_uid = new_uid(), new_uid()
        try:
            for i in range(slices):
                ds = template.copy()
                ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series_uid
                ds.SOPInstanceUID = new_uid()
                ds.InstanceNumber = i + 1
                ds.ImagePositionPatient = ["0", "0", str(i)]
                rsp = assoc.send_c_store(ds)
                statuses.append(int(getattr(rsp, "Status", -1)))
                sent_bytes += 512 * 1024
                ahead = sent_bytes / (rate_mb_s * 1e6) - (time.monotonic() - started)
                if ahead > 0:
                    time.sleep(ahead)
        finally:
            assoc.release()
    return statuses


def test_small_store_keeps_receiving_under_the_watermark(
    node_factory: Callable[..., Any], tmp_path: Path
) -> None:
    """A 300 MB store receives three times its capacity of W1-like series with a live PACS
    and keep_days = 0: no 0xA700 ever, and the free space (a real small filesystem where
    mounting is allowed) or the store size (``max_store_mb`` otherwise) stays within the
    watermark throughout."""
    from tests.faults import small_filesystem

    with small_filesystem(tmp_path / "small", 300) as mounted:
        data = (tmp_path / "small" if mounted else tmp_path) / "data"
        if mounted:
            watermark = {"min_free_mb": 100, "max_store_mb": 0}
        else:  # no mounts here (a container without the privilege): the size limit
            watermark = {"min_free_mb": 0, "max_store_mb": 150}
        pacs = _SinkPacs()  # a live PACS in its own process
        cfg = make_config(
            data,
            storage={"min_free_mb": 30 if mounted else 0},
            forwarding={**FAST_FORWARD, "batch_size": 50},
            retention=_retention(keep_days=1, interval_s=1, **watermark),
        )
        cfg.destinations = [_dest(pacs.port)]
        node = node_factory(cfg)
        samples: list[tuple[int, int]] = []  # (free bytes, store bytes of the index)
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                with node.sessions() as session:
                    size = retention.figures(session, only_when_delivered=True).store_bytes
                samples.append((shutil.disk_usage(data).free, size))
                stop.wait(0.1)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        # the modality in its own process too (the node alone in this one)
        sender = subprocess.run(
            [
                sys.executable,
                "-c",
                "import json, sys; from tests.test_retention import _send_w1_like; "
                "print(json.dumps(_send_w1_like(int(sys.argv[1]), 15, 120, 15)))",
                str(node.port),
            ],
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            capture_output=True,
            text=True,
            timeout=300,
        )
        try:
            assert sender.returncode == 0, sender.stderr[-2000:]
            statuses = json.loads(sender.stdout.strip().splitlines()[-1])
        finally:
            stop.set()
            sampler.join()
            pacs.stop()
        node.stop(grace_s=2)  # before the small filesystem goes
        assert statuses.count(0) == len(statuses) == 1800, sorted(set(statuses))
        with node.sessions() as session:
            done = session.scalar(
                select(func.count()).select_from(Deletion).where(Deletion.reason != "manual")
            )
        assert done
        low = min(free for free, _ in samples) // MIB
        high = max(size for _, size in samples) // MIB
        if mounted:
            assert low > 30, f"free space fell to {low} MiB (floor 30)"
        else:
            assert high < 150 + 60, f"the store grew to {high} MiB (limit 150)"
        with node.sessions() as session:
            deleted = retention.deleted_by_reason(session)
        assert sum(count for count, _ in deleted.values()) > 900
        print(f"free space low {low} MiB, store high {high} MiB, deleted {deleted}")


def test_cli_delete_and_deletions(
    node_factory: Callable[..., Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``spacing-scp delete``: one-line refusal (exit 1) while undelivered, ``--force``
    deletes; an unknown UID is exit 2; ``deletions --json`` lists what went."""
    from scp.cli import main as cli_main

    cfg = make_config(tmp_path / "data", forwarding=FAST_FORWARD)
    cfg.destinations = [_dest(free_port())]
    node = node_factory(cfg)
    files = _series(tmp_path / "in", 4)
    assert {r.status for r in send_files(node.port, files)} == {0}
    node.stop(grace_s=2)
    series_uid = _uid(files[0], "SeriesInstanceUID")
    where = ["--data-dir", str(tmp_path / "data")]
    capsys.readouterr()

    assert cli_main(["delete", "series", series_uid, *where]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not yet confirmed" in err and "--force" in err
    assert cli_main(["delete", "instance", "1.2.3.4", *where]) == 2
    assert "no instance 1.2.3.4" in capsys.readouterr().err
    assert cli_main(["delete", "series", series_uid, "--force", "--reason", "test", *where]) == 0
    assert capsys.readouterr().out.startswith(f"deleted series {series_uid}: 4 instance(s)")
    assert cli_main(["deletions", "--json", *where]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert row["reason"] == "manual" and row["actor"].startswith("cli")
    assert row["forced"] is True and row["comment"] == "test" and row["instances"] == 4
    assert not list((tmp_path / "data" / "instances").rglob("*.dcm"))


def test_retrieve_racing_a_deletion_fails_that_sub_operation(
    node_factory: Callable[..., Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A C-GET that found an instance a deletion then removed: that sub-operation fails
    (0xB000, one failed, the others completed), nothing crashes; WADO-RS answers 404."""
    from pynetdicom import AE, StoragePresentationContexts, build_role, evt
    from pynetdicom.sop_class import (  # type: ignore[attr-defined]
        StudyRootQueryRetrieveInformationModelGet,
    )

    from scp.services.retrieve import RetrieveService

    node = node_factory(http={"token": "t"})
    files = _series(tmp_path / "in", 3)
    assert {r.status for r in send_files(node.port, files)} == {0}
    study, series, gone = (
        _uid(files[0], "StudyInstanceUID"),
        _uid(files[0], "SeriesInstanceUID"),
        _uid(files[1]),
    )
    found = RetrieveService.instances

    def then_deleted(self: RetrieveService, *args: Any) -> Any:
        out = found(self, *args)
        node.retention.delete("instance", gone, actor="test")
        return out

    monkeypatch.setattr(RetrieveService, "instances", then_deleted)
    received: list[str] = []
    ae = AE(ae_title="RETRSCU")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    roles = []
    for cx in StoragePresentationContexts[:100]:
        ae.add_requested_context(cx.abstract_syntax)
        roles.append(build_role(cx.abstract_syntax, scp_role=True))
    assoc = ae.associate(
        "127.0.0.1",
        node.port,
        ae_title="SPACING_SCP",
        ext_neg=roles,
        evt_handlers=[
            (evt.EVT_C_STORE, lambda e: received.append(str(e.request.AffectedSOPInstanceUID)) or 0)
        ],
    )
    assert assoc.is_established
    try:
        from pydicom.dataset import Dataset

        query = Dataset()
        query.QueryRetrieveLevel = "SERIES"
        query.StudyInstanceUID, query.SeriesInstanceUID = study, series
        responses = [
            st for st, _ in assoc.send_c_get(query, StudyRootQueryRetrieveInformationModelGet)
        ]
    finally:
        assoc.release()
    final = responses[-1]
    assert int(final.Status) == 0xB000
    assert int(final.NumberOfFailedSuboperations) == 1
    assert int(final.NumberOfCompletedSuboperations) == 2
    assert gone not in received and len(received) == 2
    req = urllib.request.Request(
        f"http://127.0.0.1:{node.api.port}/dicom-web/studies/{study}/series/{series}"
        f"/instances/{gone}",
        headers={
            "Authorization": "Bearer t",
            "Accept": "multipart/related; type=application/dicom",
        },
    )
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req)
    assert err.value.code == 404


def test_retention_lock_row_one_holder_at_a_time(sessions: Any) -> None:
    """The lock row (both backends): one holder at a time, renewable by its holder, free
    again after unlock or once the holder's lease ran out (a node that died)."""
    assert retention.try_lock(sessions, "node-a", lease_s=60)
    assert not retention.try_lock(sessions, "node-b", lease_s=60)
    assert retention.try_lock(sessions, "node-a", lease_s=60)  # renewed
    retention.unlock(sessions, "node-a")
    assert retention.try_lock(sessions, "node-b", lease_s=0.2)
    assert not retention.try_lock(sessions, "node-a", lease_s=60)
    time.sleep(0.4)  # node-b died: its lease ends
    assert retention.try_lock(sessions, "node-a", lease_s=60)


def test_two_nodes_on_postgresql_delete_once(
    node_factory: Callable[..., Any], tmp_path: Path, postgres_url: str
) -> None:
    """Two nodes sharing one PostgreSQL index and one store run their passes at once:
    every instance is deleted once, recorded once, and both see the result."""
    from scp.config_tables import RetentionConfig
    from scp.services.retention import Retention
    from storage.db import make_engine, make_session_factory
    from storage.filestore import FileStore

    data = tmp_path / "data"
    node = node_factory(make_config(data, storage={"database_url": postgres_url}))
    files = _series(tmp_path / "in", 30) + _series(tmp_path / "in", 30)
    assert {r.status for r in send_files(node.port, files)} == {0}
    policy = RetentionConfig(enabled=True, keep_days=0, settle_s=0, min_free_mb=0, batch_size=7)
    engines = [make_engine(postgres_url) for _ in range(2)]
    passes = [
        Retention(
            make_session_factory(e), FileStore(data, tmp_name=f"n{i}"), policy, holder=f"n{i}"
        )
        for i, e in enumerate(engines)
    ]
    results: list[Any] = [None, None]

    def run(i: int) -> None:
        results[i] = passes[i].run_once()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    if not all(r.ran and r.instances for r in results):  # the one that waited runs again
        for p in passes:
            p.run_once()
    with node.sessions() as session:
        rows = list(session.scalars(select(Deletion)))
        assert sum(r.instances for r in rows) == 60
        assert session.scalar(select(func.count()).select_from(Instance)) == 0
    assert _store_files(node) == set()
    for p in passes:
        with p.sessions() as session, pytest.raises(NotFound):
            node.queries.get_series(session, _uid(files[0], "SeriesInstanceUID"))
    for e in engines:
        e.dispose()


def test_keep_flagged_days_keeps_flagged_series_longer(
    node_factory: Callable[..., Any], tmp_path: Path
) -> None:
    """``keep_days`` deletes a clean series; a series with a finding waits for
    ``keep_flagged_days``."""
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import update

    node = node_factory()
    clean, flagged = _series(tmp_path / "in", 3), _series(tmp_path / "in", 3)
    assert {r.status for r in send_files(node.port, clean + flagged)} == {0}
    flagged_uid = _uid(flagged[0], "SeriesInstanceUID")
    with node.sessions() as session:
        session.execute(
            update(Series)
            .where(Series.series_instance_uid == flagged_uid)
            .values(finding_codes=",SLICE_MISSING,")
        )
        session.commit()
    now = datetime.now(UTC)
    with node.sessions() as session:
        found = retention.deletable(
            session,
            received_before=now,
            flagged_received_before=now - timedelta(days=1),
            only_when_delivered=True,
            limit=100,
        )
    assert {c.series_instance_uid for c in found} == {_uid(clean[0], "SeriesInstanceUID")}


def test_serve_runs_the_pass_in_the_indexer_process(
    node_process: Callable[..., Any], tmp_path: Path
) -> None:
    """``spacing-scp serve`` (indexer process): the pass runs beside the indexer and deletes
    what no destination waits for once ``keep_days`` = 0 allows it."""
    data = tmp_path / "data"
    node = node_process(
        data_dir=data,
        env={
            "SPACING_SCP_RETENTION_ENABLED": "true",
            "SPACING_SCP_RETENTION_KEEP_DAYS": "0",
            "SPACING_SCP_RETENTION_INTERVAL_S": "0.5",
            "SPACING_SCP_RETENTION_SETTLE_S": "0",
            "SPACING_SCP_RETENTION_MIN_FREE_MB": "0",
        },
    )
    files = _series(tmp_path / "in", 5)
    assert {r.status for r in send_files(node.port, files)} == {0}

    def gone() -> bool:
        return not list((data / "instances").rglob("*.dcm"))

    assert wait_until(gone, timeout=20), node.log_path.read_text()[-2000:]
    assert node.stop() == 0
    assert "retention (keep_days): deleted" in node.log_path.read_text()


def test_partly_deleted_series_keeps_its_geometry(
    node_factory: Callable[..., Any], tmp_path: Path
) -> None:
    """Deleting a slice in the middle of a series: the summary keeps the geometry and
    verdict as received (no missing slice), counts what remains and says how many went;
    a slice received later still folds in."""
    node = node_factory(http={"token": "t"})
    files = _series(tmp_path / "in", 9)
    assert {r.status for r in send_files(node.port, files[:8])} == {0}
    series_uid = _uid(files[0], "SeriesInstanceUID")
    with node.sessions() as session:
        before = node.queries.get_series(session, series_uid)
    for gone in (files[3], files[7]):  # one in the middle, the top one
        node.retention.delete("instance", _uid(gone), actor="test")
    # the next slice lands on the deleted top one: its neighbour is still known
    assert {r.status for r in send_files(node.port, files[8:])} == {0}
    with node.sessions() as session:
        after = node.queries.get_series(session, series_uid)
    assert (after["instance_count"], after["deleted_instances"]) == (7, 2)
    assert "SLICE_MISSING" not in {f["code"] for f in after["findings"]}
    # no 2 mm gap where the slice went: the gaps are those of the series as received
    gaps = before["slice_spacing"]["distinct_gaps_mm"]
    assert after["slice_spacing"]["distinct_gaps_mm"] == gaps
    assert after["pixel_spacing"] == before["pixel_spacing"]
    with urllib.request.urlopen(f"http://127.0.0.1:{node.api.port}/ui/series/{series_uid}") as rsp:
        assert "2 deleted since received" in rsp.read().decode()


def test_a_resend_answered_while_its_instance_is_deleted_keeps_its_file(
    node_factory: Callable[..., Any], tmp_path: Path
) -> None:
    """A modality resends an instance while a deletion of it commits: the resend was
    answered Success (its file in place, its journal record written) but the indexer has
    not indexed it yet. The deletion waits for the index to hold what was acknowledged
    before it unlinks, so the resend's file stays, indexed (it was unlinked: the resend
    came within the 5 s write margin of the deleted row)."""
    cfg = make_config(tmp_path / "data", node={"indexer": "process"}, retention=_retention())
    node = node_factory(cfg)
    [src] = _series(tmp_path / "in", 1)
    assert send_files(node.port, [src])[0].status == 0
    uid = _uid(src)
    assert wait_until(lambda: _count(node, Instance) == 1, 10)
    node.indexer.indexer.poll_s = 1.0  # an indexer that looks once a second from now on
    time.sleep(0.1)
    assert send_files(node.port, [src])[0].status == 0  # the resend, journaled only
    node.retention.delete("instance", uid, actor="test", force=True)
    assert wait_until(lambda: _count(node, Instance) == 1, 10)
    assert _store_files(node) == _indexed_paths(node) != set()
