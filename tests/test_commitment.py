"""Issue 17 item 1: Storage Commitment Push Model SCP (PS3.4 J) with real peers.

A pynetdicom modality sends a series, asks for commitment over the same association and
over a new one, and receives the N-EVENT-REPORT with the right success and failure lists;
``commit_when = "forwarded"`` waits for the PACS (dcmtk ``storescp``); pending requests
survive a restart and a SIGKILL.
"""

from __future__ import annotations

import queue
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pynetdicom import AE, evt
from pynetdicom.sop_class import StorageCommitmentPushModel  # type: ignore[attr-defined]

from scp import status
from scp.config import Peer
from scp.services.commitment import SOP_INSTANCE_UID, action_information
from tests.conftest import free_port, make_config, send_files
from tests.dicom_factory import new_uid, write_ct
from tests.pacs import DcmtkPacs

CT = "1.2.840.10008.5.1.4.1.1.2"
MR = "1.2.840.10008.5.1.4.1.1.4"


class Modality:
    """A pynetdicom modality: Storage Commitment SCU that also accepts reports on a new
    association (it takes the SCU role there, the node the SCP role)."""

    def __init__(self, ae_title: str = "MODALITY") -> None:
        self.ae_title = ae_title
        self.port = free_port()
        self.reports: queue.Queue[tuple[str, int, Dataset]] = queue.Queue()
        self._server: Any = None

    def _on_report(self, how: str) -> Any:
        def handler(event: Any) -> tuple[int, None]:
            self.reports.put((how, int(event.event_type), event.event_information))
            return 0x0000, None

        return handler

    def listen(self) -> Modality:
        ae = AE(ae_title=self.ae_title)
        ae.add_supported_context(StorageCommitmentPushModel, scu_role=False, scp_role=True)
        self._server = ae.start_server(
            ("127.0.0.1", self.port),
            block=False,
            evt_handlers=[(evt.EVT_N_EVENT_REPORT, self._on_report("new association"))],
        )
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None

    def request(
        self, node_port: int, transaction: str, refs: list[tuple[str, str]], wait_s: float = 0
    ) -> int:
        """N-ACTION over a new association; keep it open ``wait_s`` seconds for a report."""
        ae = AE(ae_title=self.ae_title)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
        ae.add_requested_context(StorageCommitmentPushModel)
        assoc = ae.associate(
            "127.0.0.1",
            node_port,
            ae_title="SPACING_SCP",
            evt_handlers=[(evt.EVT_N_EVENT_REPORT, self._on_report("same association"))],
        )
        assert assoc.is_established
        info = action_information(transaction, refs)
        rsp, _ = assoc.send_n_action(info, 1, StorageCommitmentPushModel, SOP_INSTANCE_UID)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline and self.reports.empty():
            time.sleep(0.02)
        assoc.release()
        return int(rsp.Status)

    def report(self, timeout: float = 20) -> tuple[str, int, dict[str, Any]]:
        how, event_type, ds = self.reports.get(timeout=timeout)
        committed = [str(i.ReferencedSOPInstanceUID) for i in ds.get("ReferencedSOPSequence", [])]
        failed = {
            str(i.ReferencedSOPInstanceUID): int(i.FailureReason)
            for i in ds.get("FailedSOPSequence", [])
        }
        return how, event_type, {"tx": str(ds.TransactionUID), "ok": committed, "failed": failed}


def _series(folder: Path, count: int) -> tuple[list[Path], list[str]]:
    study, series = new_uid(), new_uid()
    sops = [new_uid() for _ in range(count)]
    files = [
        write_ct(folder / f"{i}.dcm", study=study, series=series, sop=sop, instance_number=i + 1)
        for i, sop in enumerate(sops)
    ]
    return files, sops


@pytest.fixture
def modality() -> Iterator[Modality]:
    mod = Modality()
    yield mod
    mod.stop()


def _node(node_factory: Any, tmp_path: Path, modality: Modality, **commitment: Any) -> Any:
    cfg = make_config(tmp_path / "data", commitment={"poll_s": 0.2, "retry_s": 0.5, **commitment})
    cfg.commitment_peers = [Peer(ae_title=modality.ae_title, host="127.0.0.1", port=modality.port)]
    return node_factory(cfg)


def test_commitment_on_the_same_association_with_failures(
    node_factory: Any, tmp_path: Path, modality: Modality
) -> None:
    node = _node(node_factory, tmp_path, modality)
    files, sops = _series(tmp_path / "s", 3)
    assert all(r.status == status.SUCCESS for r in send_files(node.port, files, "MODALITY"))
    never_sent = new_uid()
    tx = new_uid()
    refs = [(CT, s) for s in sops] + [(CT, never_sent), (MR, sops[0])]
    assert modality.request(node.port, tx, refs, wait_s=10) == 0x0000
    how, event_type, report = modality.report(timeout=1)
    assert how == "same association" and event_type == 2
    assert report["tx"] == tx
    assert sorted(report["ok"]) == sorted(sops)
    assert report["failed"] == {never_sent: 0x0112, sops[0]: 0x0119}


def test_commitment_on_a_new_association_with_role_selection(
    node_factory: Any, tmp_path: Path, modality: Modality
) -> None:
    node = _node(node_factory, tmp_path, modality)
    modality.listen()
    files, sops = _series(tmp_path / "s", 3)
    assert all(r.status == status.SUCCESS for r in send_files(node.port, files, "MODALITY"))
    tx = new_uid()
    assert modality.request(node.port, tx, [(CT, s) for s in sops]) == 0x0000  # released
    how, event_type, report = modality.report()
    assert how == "new association" and event_type == 1
    assert sorted(report["ok"]) == sorted(sops) and report["failed"] == {}


def test_unknown_requester_and_bad_request_are_refused(
    node_factory: Any, tmp_path: Path, modality: Modality
) -> None:
    node = _node(node_factory, tmp_path, modality)
    stranger = Modality("STRANGER")
    assert stranger.request(node.port, new_uid(), [(CT, new_uid())]) == 0x0124
    assert modality.request(node.port, "not-a-uid", [(CT, new_uid())]) == 0x0106
    assert modality.request(node.port, new_uid(), []) == 0x0120


@pytest.mark.dcmtk
def test_commit_when_forwarded_waits_for_the_pacs_across_a_restart(
    node_factory: Any, tmp_path: Path, modality: Modality
) -> None:
    from scp.node import Node

    pacs_port = free_port()
    cfg = make_config(
        tmp_path / "data", commitment={"poll_s": 0.2, "retry_s": 0.5, "commit_when": "forwarded"}
    )
    cfg.commitment_peers = [Peer(ae_title=modality.ae_title, host="127.0.0.1", port=modality.port)]
    from scp.config import Destination

    cfg.destinations = [
        Destination(
            name="pacs",
            ae_title="PACS",
            host="127.0.0.1",
            port=pacs_port,
            retry_initial_s=0.3,
            retry_max_s=0.5,
        )
    ]
    node = Node(cfg)
    node.start()
    modality.listen()
    files, sops = _series(tmp_path / "s", 3)
    assert all(r.status == status.SUCCESS for r in send_files(node.port, files, "MODALITY"))
    tx = new_uid()
    assert modality.request(node.port, tx, [(CT, s) for s in sops], wait_s=1.5) == 0x0000
    assert modality.reports.empty()  # the PACS has nothing yet: no report
    node.stop(grace_s=2)
    again = Node(cfg)  # a restart: the request is a row
    again.start()
    try:
        time.sleep(1.0)
        assert modality.reports.empty()
        pacs = DcmtkPacs(tmp_path / "pacs", port=pacs_port)
        try:
            how, event_type, report = modality.report(timeout=30)
        finally:
            pacs.stop()
        assert how == "new association" and event_type == 1
        assert report["tx"] == tx and sorted(report["ok"]) == sorted(sops)
        assert len(list((tmp_path / "pacs").iterdir())) == 3
    finally:
        again.stop(grace_s=2)


def test_sigkill_between_response_and_report_loses_nothing(
    node_process: Any, tmp_path: Path, modality: Modality
) -> None:
    config = tmp_path / "node.toml"
    config.write_text(
        "[commitment]\npoll_s = 0.2\nretry_s = 0.5\n\n"
        f'[[commitment_peers]]\nae_title = "MODALITY"\nhost = "127.0.0.1"\nport = {modality.port}\n'
    )
    data = tmp_path / "data"
    node = node_process(data_dir=data, config=config)
    files, sops = _series(tmp_path / "s", 2)
    assert all(r.status == status.SUCCESS for r in send_files(node.port, files, "MODALITY"))
    tx = new_uid()
    # The modality is not listening yet: the report cannot go out on a new association.
    assert modality.request(node.port, tx, [(CT, s) for s in sops]) == 0x0000
    time.sleep(0.5)
    node.stop(signal.SIGKILL)
    modality.listen()
    again = node_process(data_dir=data, config=config, port=node.port)
    how, event_type, report = modality.report(timeout=30)
    assert how == "new association" and event_type == 1
    assert report["tx"] == tx and sorted(report["ok"]) == sorted(sops)
    assert again.stop() == 0


class CommittingPacs:
    """A pynetdicom PACS that stores and is a Storage Commitment SCP: it answers an
    N-ACTION, then reports on the same association; ``refuse`` lists SOP Instance UIDs it
    reports failed (0x0110)."""

    def __init__(self, refuse: set[str] | None = None) -> None:
        self.port = free_port()
        self.refuse = refuse or set()
        self.stored: set[str] = set()
        self.actions: list[str] = []
        self._server: Any = None

    def _on_store(self, event: Any) -> int:
        self.stored.add(str(event.request.AffectedSOPInstanceUID))
        return 0x0000

    def _on_action(self, event: Any) -> tuple[int, None]:
        info = event.action_information
        self.actions.append(str(info.TransactionUID))
        refs = [
            (str(i.ReferencedSOPClassUID), str(i.ReferencedSOPInstanceUID))
            for i in info.ReferencedSOPSequence
        ]

        def report() -> None:
            time.sleep(0.2)
            ds = Dataset()
            ds.TransactionUID = info.TransactionUID
            ok, bad = [], []
            for sop_class, sop in refs:
                item = Dataset()
                item.ReferencedSOPClassUID = sop_class
                item.ReferencedSOPInstanceUID = sop
                if sop in self.stored and sop not in self.refuse:
                    ok.append(item)
                else:
                    item.FailureReason = 0x0110
                    bad.append(item)
            if ok:
                ds.ReferencedSOPSequence = DicomSequence(ok)
            if bad:
                ds.FailedSOPSequence = DicomSequence(bad)
            event.assoc.send_n_event_report(
                ds, 2 if bad else 1, StorageCommitmentPushModel, SOP_INSTANCE_UID
            )

        threading.Thread(target=report, daemon=True).start()
        return 0x0000, None

    def start(self) -> CommittingPacs:
        from pynetdicom import AllStoragePresentationContexts

        ae = AE(ae_title="CPACS")
        for cx in AllStoragePresentationContexts[:120]:
            ae.add_supported_context(cx.abstract_syntax)
        ae.add_supported_context(StorageCommitmentPushModel)
        self._server = ae.start_server(
            ("127.0.0.1", self.port),
            block=False,
            evt_handlers=[(evt.EVT_C_STORE, self._on_store), (evt.EVT_N_ACTION, self._on_action)],
        )
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()


def test_forwarded_waits_for_the_destinations_own_commitment(
    node_factory: Any, tmp_path: Path, modality: Modality
) -> None:
    from scp.config import Destination

    files, sops = _series(tmp_path / "s", 3)
    pacs = CommittingPacs(refuse={sops[2]}).start()
    try:
        cfg = make_config(
            tmp_path / "data",
            commitment={"poll_s": 0.2, "retry_s": 0.5, "commit_when": "forwarded"},
        )
        cfg.commitment_peers = [
            Peer(ae_title=modality.ae_title, host="127.0.0.1", port=modality.port)
        ]
        cfg.destinations = [
            Destination(
                name="pacs",
                ae_title="CPACS",
                host="127.0.0.1",
                port=pacs.port,
                storage_commitment=True,
            )
        ]
        node = node_factory(cfg)
        assert all(r.status == status.SUCCESS for r in send_files(node.port, files, "MODALITY"))
        tx = new_uid()
        assert modality.request(node.port, tx, [(CT, s) for s in sops], wait_s=20) == 0x0000
        how, event_type, report = modality.report(timeout=1)
        assert how == "same association" and event_type == 2
        assert sorted(report["ok"]) == sorted(sops[:2])
        assert report["failed"] == {sops[2]: 0x0110}  # the PACS did not commit to it
        assert pacs.actions and pacs.stored == set(sops)
    finally:
        pacs.stop()
