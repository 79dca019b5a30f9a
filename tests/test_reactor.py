"""scp.net.reactor: event-driven association reactors, over real associations (issue 7)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pynetdicom
import pytest
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.sop_class import CTImageStorage, Verification

from scp.net import compat, reactor
from scp.status import SUCCESS
from tests.conftest import metric_value, send_files
from tests.dicom_factory import write_ct


def _associate(port: int) -> Any:
    ae = AE(ae_title="REACTORTEST")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    ae.add_requested_context(Verification)
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate("127.0.0.1", port, ae_title="SPACING_SCP")
    assert assoc.is_established
    return assoc


def _acceptors(node: Any) -> list[Association]:
    return list(node.server.active_associations)


def _wait_no_associations(node: Any, within_s: float) -> float:
    started = time.monotonic()
    while _acceptors(node):
        assert time.monotonic() - started < within_s, "acceptor association still running"
        time.sleep(0.005)
    return time.monotonic() - started


def test_default_acceptors_are_event_driven(node: Any, tmp_path: Path) -> None:
    assert compat.supported()
    assoc = _associate(node.port)
    try:
        (acceptor,) = _acceptors(node)
        assert isinstance(acceptor, reactor.EventDrivenAssociation)
        assert isinstance(acceptor.dul, reactor.EventDrivenDUL)
        # pynetdicom's timers are set on the DUL that runs.
        assert acceptor.dul.artim_timer.timeout == node.ae.acse_timeout
        assert compat.idle_timer(acceptor.dul).timeout == node.ae.network_timeout
        # Many request/response round trips on one association: each is answered at once
        # (a polling reactor would add ~3 ms of sleeps to every one).
        for _ in range(50):
            assert assoc.send_c_echo().Status == SUCCESS
    finally:
        assoc.release()
    # The release wakes both threads: no waiting out a poll interval or idle timeout.
    _wait_no_associations(node, within_s=2.0)


def test_event_driven_store_and_abort(node: Any, tmp_path: Path) -> None:
    paths = [write_ct(tmp_path / f"ct{i}.dcm", instance_number=i + 1) for i in range(5)]
    assert [r.status for r in send_files(node.port, paths)] == [SUCCESS] * 5
    assoc = _associate(node.port)
    assoc.abort()
    _wait_no_associations(node, within_s=2.0)
    # The node still accepts and stores after an abort.
    more = [write_ct(tmp_path / "ct-after.dcm", instance_number=9)]
    assert [r.status for r in send_files(node.port, more)] == [SUCCESS]


def test_idle_association_still_times_out(node_factory: Callable[..., Any]) -> None:
    node = node_factory(node={"network_timeout": 1.0, "acse_timeout": 1.0})
    assoc = _associate(node.port)
    started = time.monotonic()
    while assoc.is_established:
        assert time.monotonic() - started < 5.0, "idle association never timed out"
        time.sleep(0.02)
    # pynetdicom's idle timer is still honoured: the wait is bounded by reactor.IDLE_WAIT.
    assert 0.9 < time.monotonic() - started < 1.0 + 1.0


def test_polling_reactor_on_request(node_factory: Callable[..., Any], tmp_path: Path) -> None:
    node = node_factory(node={"reactor": "polling"})
    assoc = _associate(node.port)
    try:
        (acceptor,) = _acceptors(node)
        assert type(acceptor) is Association
        assert assoc.send_c_echo().Status == SUCCESS
    finally:
        assoc.release()
    path = write_ct(tmp_path / "ct.dcm")
    assert [r.status for r in send_files(node.port, [path])] == [SUCCESS]


def test_other_pynetdicom_versions_get_the_stock_reactors(
    node_factory: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pynetdicom, "__version__", "3.1.0")
    assert not compat.supported()
    node = node_factory()
    assoc = _associate(node.port)
    try:
        (acceptor,) = _acceptors(node)
        assert type(acceptor) is Association
    finally:
        assoc.release()


def test_wake_pipes_are_closed_and_never_written_after_the_end(node: Any) -> None:
    """Each DUL's wake-up pipe is closed when its thread ends (no descriptor leak), and a
    late wake() cannot write to the reused descriptor numbers."""

    def open_fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    assoc = _associate(node.port)
    (acceptor,) = _acceptors(node)
    assoc.release()
    _wait_no_associations(node, within_s=2.0)
    dul = acceptor.dul
    assert isinstance(dul, reactor.EventDrivenDUL)
    dul.wake()  # after the end: a no-op
    dul.request_stop()
    before = open_fds()
    for _ in range(20):
        assoc = _associate(node.port)
        assert assoc.send_c_echo().Status == SUCCESS
        assoc.release()
    _wait_no_associations(node, within_s=2.0)
    assert open_fds() <= before + 2


def _associations(end: str) -> float:
    """``spacing_scp_associations_total{end=...}`` as ``/metrics`` serves it."""
    return metric_value("spacing_scp_associations_total", end=end)


def test_a_release_is_counted_as_released_not_closed(node: Any, tmp_path: Path) -> None:
    """dcmtk's storescu closes its connection the moment it has the A-RELEASE-RP: the
    association must still end as ``released`` (it ended as ``closed`` about three times
    in four when EVT_RELEASED came after the RP)."""
    import subprocess

    from tests.conftest import dcmtk_env, dcmtk_tool

    storescu = dcmtk_tool("storescu")
    src = write_ct(tmp_path / "ct.dcm")
    released, closed = _associations("released"), _associations("closed")
    for _ in range(8):
        done = subprocess.run(
            [storescu, "-aec", "SPACING_SCP", "127.0.0.1", str(node.port), str(src)],
            env=dcmtk_env(),
            capture_output=True,
            timeout=30,
        )
        assert done.returncode == 0, done.stderr
    deadline = time.monotonic() + 5
    while _associations("released") < released + 8 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert (_associations("released"), _associations("closed")) == (released + 8, closed)
