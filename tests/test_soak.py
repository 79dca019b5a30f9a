"""Issue 15 soak: 20,000 small instances over 4 associations while the destination goes
down and up. The node's RSS, open file descriptors and threads stay flat, and every
instance reaches the destination exactly once. Marked ``soak`` (CI runs it; a few
minutes); ``SPACING_SCP_SOAK_INSTANCES`` scales it for a quick local run."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian
from pynetdicom import AE

from tests.conftest import NodeProcess
from tests.dicom_factory import ct_dataset, new_uid
from tests.pacs import Pacs, wait_until

INSTANCES = int(os.environ.get("SPACING_SCP_SOAK_INSTANCES", "20000"))
ASSOCIATIONS = 4
PER_SERIES = 100


class FlappingPacs(Pacs):
    """A PACS that goes down (listening socket closed; an association still open is
    aborted at its next C-STORE, before anything is stored) and comes back."""

    def __init__(self) -> None:
        super().__init__()
        self.is_down = False
        self.outages = 0

    def _on_store(self, event: Any) -> int:
        if self.is_down:
            event.assoc.abort()
            return 0xA700  # never sent: the association is gone
        return super()._on_store(event)

    def down(self) -> None:
        self.is_down = True
        self.outages += 1
        self.stop()

    def up(self) -> None:
        self.is_down = False
        self.start()


def _process(pid: int) -> dict[str, int]:
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    fields = dict(line.split(":", 1) for line in status if ":" in line)
    return {
        "rss_kb": int(fields["VmRSS"].split()[0]),
        "threads": int(fields["Threads"]),
        "fds": len(os.listdir(f"/proc/{pid}/fd")),
    }


def _send(port: int, count: int, sent: list[int], failures: list[str], resent: list[str]) -> None:
    try:
        _send_all(port, count, sent, failures, resent)
    except Exception as exc:  # seen by the test, not lost in the thread
        failures.append(f"sender: {type(exc).__name__}: {exc}")


def _associate() -> AE:
    ae = AE(ae_title="SOAKSCU")
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    ae.acse_timeout = ae.network_timeout = 60
    # pynetdicom's SCU sometimes drops a C-STORE-RSP that arrives as its reactor
    # checks for requests ("Received unexpected C-STORE service message") and then
    # waits for it: a modality would time out and resend, so does this sender.
    ae.dimse_timeout = 15
    return ae


def _send_all(
    port: int, count: int, sent: list[int], failures: list[str], resent: list[str]
) -> None:
    ae = _associate()
    assoc = ae.associate("127.0.0.1", port, ae_title="SPACING_SCP")
    assert assoc.is_established
    try:
        study = new_uid()
        series = new_uid()
        for i in range(count):
            if failures:
                return  # the test is failing: let the node stop without waiting for us
            if i % PER_SERIES == 0:
                series = new_uid()
            ds = ct_dataset(
                study=study,
                series=series,
                instance_number=i % PER_SERIES + 1,
                position=(0.0, 0.0, float(i % PER_SERIES)),
            )
            ds.file_meta = FileMetaDataset()
            ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
            code = getattr(assoc.send_c_store(ds), "Status", None)
            if code is None:  # no response: a new association, and the instance again
                resent.append(str(ds.SOPInstanceUID))
                assoc.abort()
                assoc = ae.associate("127.0.0.1", port, ae_title="SPACING_SCP")
                assert assoc.is_established
                code = getattr(assoc.send_c_store(ds), "Status", None)
            if code != 0:
                failures.append(f"{ds.SOPInstanceUID}: {code}")
            sent[0] += 1
    finally:
        if assoc.is_established:
            assoc.release()


@pytest.mark.soak
def test_soak_20000_instances_4_associations_destination_flapping(tmp_path: Path) -> None:
    pacs = FlappingPacs().start()
    config = tmp_path / "node.toml"
    config.write_text(
        f"""
[logging]
level = "WARNING"
[forwarding]
poll_s = 0.5
batch_size = 100
probe_interval_s = 1.0
[[destinations]]
name = "pacs"
ae_title = "PACS"
host = "127.0.0.1"
port = {pacs.port}
retry_initial_s = 0.2
retry_max_s = 2.0
"""
    )
    node = NodeProcess(tmp_path / "data", config=config, env={"PYTHONFAULTHANDLER": "1"}).start()
    assert node.proc is not None
    pid = node.proc.pid
    stop = threading.Event()

    def flap() -> None:
        while not stop.wait(8.0):
            pacs.down()
            if stop.wait(2.0):
                pacs.up()
                return
            pacs.up()

    flapper = threading.Thread(target=flap)
    sent = [0]
    failures: list[str] = []
    resent: list[str] = []
    started = time.monotonic()
    try:
        flapper.start()
        each = INSTANCES // ASSOCIATIONS
        senders = [
            threading.Thread(target=_send, args=(node.port, each, sent, failures, resent))
            for _ in range(ASSOCIATIONS)
        ]
        for t in senders:
            t.start()

        def watchdog() -> None:  # a stalled node dumps its threads (PYTHONFAULTHANDLER)
            last, since = -1, time.monotonic()
            while not stop.wait(1.0):
                if sent[0] != last:
                    last, since = sent[0], time.monotonic()
                elif time.monotonic() - since > 30 and sent[0] < INSTANCES:
                    os.kill(pid, signal.SIGABRT)
                    return

        threading.Thread(target=watchdog, daemon=True).start()
        samples: dict[str, dict[str, int]] = {}
        for label, at in (("warm", INSTANCES // 4), ("late", INSTANCES * 19 // 20)):
            assert wait_until(lambda at=at: sent[0] >= at or bool(failures), timeout=1800, step=0.2)
            assert not failures, failures[:5]
            samples[label] = _process(pid)
        for t in senders:
            t.join(1800)
        received_s = time.monotonic() - started
        stop.set()
        flapper.join()
        assert not failures, failures[:5]
        assert wait_until(lambda: len(pacs.uids()) == INSTANCES, timeout=600, step=0.5)
        delivered_s = time.monotonic() - started
        time.sleep(2.0)  # a duplicate would arrive by now
        samples["idle"] = _process(pid)
        counts = pacs.uids()
        print(
            f"soak: {INSTANCES} instances over {ASSOCIATIONS} associations received in "
            f"{received_s:.0f} s, delivered in {delivered_s:.0f} s, "
            f"{pacs.outages} outages, {len(resent)} C-STOREs resent by the senders; {samples}"
        )
        # exactly once; an instance the sender had to send twice is two versions, and
        # may be forwarded twice (each version once)
        assert len(counts) == INSTANCES
        twice = {uid for uid, n in counts.items() if n > 1}
        assert twice <= set(resent) and set(counts.values()) <= {1, 2}, counts.most_common(3)
        warm, late, idle = samples["warm"], samples["late"], samples["idle"]
        assert late["rss_kb"] - warm["rss_kb"] < 40 * 1024, samples
        assert late["fds"] <= warm["fds"] + 8 and idle["fds"] <= warm["fds"] + 8, samples
        assert late["threads"] <= warm["threads"] + 4, samples
        assert idle["threads"] <= warm["threads"], samples
        assert pacs.outages >= 2
    finally:
        stop.set()
        if flapper.is_alive():
            flapper.join()
        node.stop()
        pacs.stop()
