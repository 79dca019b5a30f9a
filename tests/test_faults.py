"""Issue 15: faults injected while the node works; nothing accepted is lost.

PostgreSQL restarted in the middle of a transfer, the data directory's filesystem
filling up mid-instance, a destination that answers failures, warnings, then hangs.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from sqlalchemy import select

from scp import status
from storage.models import Instance
from tests.conftest import StoreResult, make_config, send_files
from tests.dicom_factory import new_uid, write_ct
from tests.faults import PrivateCluster, small_filesystem
from tests.pacs import Pacs, wait_until
from tests.test_forward import _dest, _jobs, _series


def _indexed(node: Any) -> set[str]:
    with node.sessions() as session:
        return set(session.scalars(select(Instance.sop_instance_uid)))


def _uid(result: StoreResult) -> str:
    return str(dcmread(result.path, stop_before_pixels=True).SOPInstanceUID)


def test_postgresql_restarted_mid_transfer_failures_while_down_then_recovers(
    node_factory: Callable[..., Any], tmp_path: Path
) -> None:
    try:
        cluster = PrivateCluster()
    except (RuntimeError, OSError) as exc:
        pytest.skip(f"no private PostgreSQL cluster here: {exc}")
    cluster.start()
    try:
        node = node_factory(make_config(tmp_path / "data", storage={"database_url": cluster.url}))
        files = _series(tmp_path, 400)
        results: list[StoreResult] = []
        sender = threading.Thread(target=lambda: results.extend(send_files(node.port, files)))
        sender.start()
        assert wait_until(lambda: len(_indexed(node)) >= 60, timeout=120)
        cluster.stop()
        down = time.monotonic()
        time.sleep(1.0)
        cluster.start()
        print(f"PostgreSQL was down {time.monotonic() - down:.1f} s")
        sender.join(300)
        assert len(results) == 400
        codes = [r.status for r in results]
        assert None not in codes  # every C-STORE answered, the association survived
        failed = [r for r in results if r.status != status.SUCCESS]
        assert failed, "the transfer finished before PostgreSQL stopped"
        assert {r.status for r in failed} <= {status.PROCESSING_FAILURE}
        assert all("index" in (r.comment or "") for r in failed)
        # every Success is indexed, nothing else is
        ok = {_uid(r) for r in results if r.status == status.SUCCESS}
        assert _indexed(node) == ok
        # the node recovered by itself: the failed instances are accepted when sent again
        started = time.monotonic()
        again = send_files(node.port, [r.path for r in failed])
        print(f"resent {len(again)} failed instances in {time.monotonic() - started:.1f} s")
        assert {r.status for r in again} == {status.SUCCESS}
        assert _indexed(node) == {_uid(r) for r in results}
    finally:
        cluster.close()


def test_data_directory_filling_up_mid_instance_refuses_and_loses_nothing(
    node_factory: Callable[..., Any], tmp_path: Path
) -> None:
    data = tmp_path / "small"
    with small_filesystem(data, 3) as mounted:
        if not mounted:
            pytest.skip("no small filesystem here; the free-space floor: test_store.py")
        cfg = make_config(data, storage={"database_url": f"sqlite:///{tmp_path / 'index.sqlite3'}"})
        node = node_factory(cfg)
        study, series = new_uid(), new_uid()
        files = [
            write_ct(
                tmp_path / "in" / f"{i}.dcm",
                study=study,
                series=series,
                rows=256,
                columns=256,
                instance_number=i + 1,
                position=(0.0, 0.0, float(i)),
            )
            for i in range(40)  # 40 x 128 KiB: more than the 3 MiB filesystem holds
        ]
        results = send_files(node.port, files)
        codes = [r.status for r in results]
        assert status.SUCCESS in codes and status.REFUSED_OUT_OF_RESOURCES in codes, codes
        assert set(codes) <= {status.SUCCESS, status.REFUSED_OUT_OF_RESOURCES}
        refused = [r for r in results if r.status == status.REFUSED_OUT_OF_RESOURCES]
        assert all("space" in (r.comment or "") for r in refused), refused[0].comment
        ok = [r for r in results if r.status == status.SUCCESS]
        # a resend of an accepted instance while full: refused, its stored copy intact
        before = {p: p.read_bytes() for p in (data / "instances").rglob("*.dcm")}
        assert [r.status for r in send_files(node.port, [ok[0].path])] in (
            [status.REFUSED_OUT_OF_RESOURCES],
            [status.SUCCESS],
        )
        after = {p: p.read_bytes() for p in (data / "instances").rglob("*.dcm")}
        assert after.keys() == before.keys()
        # no partial file anywhere, every accepted instance indexed and readable
        leftovers = [
            p for p in data.rglob("*") if p.is_file() and p.suffix in (".part", ".prev", ".pin")
        ]
        assert not leftovers, leftovers
        assert _indexed(node) == {_uid(r) for r in ok}
        assert len(after) == len(ok)
        for path in after:
            assert dcmread(path).PixelData
        node.stop(grace_s=1)


def test_destination_answering_failures_then_warnings_then_hanging(
    node_factory: Callable[..., Any], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="spacing_scp.forward")
    answers = iter([0xA700] * 6 + [0xB000] * 1000)
    pacs = Pacs(status_for=lambda _cls: next(answers)).start()
    try:
        cfg = make_config(
            tmp_path / "data",
            node={"dimse_timeout": 1.0},
            forwarding={"poll_s": 0.2, "lease_s": 30.0, "probe_interval_s": 0.5},
        )
        cfg.destinations = [_dest("pacs", pacs.port, max_attempts=3)]
        node = node_factory(cfg)
        first = _series(tmp_path, 4)
        assert {r.status for r in send_files(node.port, first)} == {0}
        # 6 refusals: some jobs are refused twice, none three times, so all end done
        assert wait_until(lambda: {j["state"] for j in _jobs(node)} == {"done"}, timeout=30)
        assert {j["last_status"] for j in _jobs(node)} == {0xB000}
        assert len(pacs.uids()) == 4
        # now it hangs: C-STOREs get no response within the DIMSE timeout
        pacs.delay_s = 3.0
        hung = _series(tmp_path, 3)
        assert {r.status for r in send_files(node.port, hung)} == {0}
        assert wait_until(lambda: "destination down" in caplog.text, timeout=20)
        time.sleep(2.5)
        assert "dead" not in {j["state"] for j in _jobs(node)}
        pacs.delay_s = 0.0
        assert wait_until(lambda: {j["state"] for j in _jobs(node)} == {"done"}, timeout=30)
        assert len(pacs.uids()) == 7
    finally:
        pacs.stop()
    text = caplog.text
    assert text.count("destination refuses instances") == 1
    assert text.count("destination stores instances again") == 1
    assert text.count("destination down") == 1
    assert text.count("destination up again") == 1
