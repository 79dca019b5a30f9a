"""Recovery and outages (issue 15): owned leases, outages that heal, resends, loop guard.

Outbox rules without the network first, then whole nodes with real associations.
"""

from __future__ import annotations

import logging
import random
import re
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from scp.config import Destination
from scp.services.forwarding.routing import RoutingFacts, loops_back, route
from storage import claimants, outbox
from storage.db import write_session
from storage.models import ForwardJob
from tests.conftest import free_port, make_config, send_files
from tests.pacs import Pacs, wait_until
from tests.test_forward import _dest, _jobs, _node, _series
from tests.test_forward_outbox import _instances

# -- backoff --------------------------------------------------------------------------------


@pytest.mark.parametrize("attempts", [0, 1, 11, 64, 1024, 1025, 5000, 10**9])
def test_backoff_is_capped_before_it_is_computed(attempts: int) -> None:
    rng = random.Random(attempts)
    delay = outbox.backoff_s(attempts, 5.0, 600.0, rng)
    assert 2.5 <= delay <= 600.0
    if attempts >= 11:
        assert delay >= 300.0  # the cap, with equal jitter
    # a tiny initial delay and a huge cap: still no float overflow
    assert outbox.backoff_s(attempts, 1e-3, 1e300, rng) <= 1e300


# -- owned leases ---------------------------------------------------------------------------


def test_a_dead_claimants_jobs_return_at_once_a_live_ones_never(
    sessions: sessionmaker[Session],
) -> None:
    _instances(sessions, 4)
    now = datetime.now(UTC)
    with write_session(sessions) as session:
        claimants.beat(session, "alive", now)
        claimants.beat(session, "doomed", now)
        held = outbox.claim(session, "pacs", "alive", limit=2, lease_s=300, now=now)
        lost = outbox.claim(session, "pacs", "doomed", limit=2, lease_s=300, now=now)
        assert len(held) == len(lost) == 2
    later = now + timedelta(seconds=6)
    with write_session(sessions) as session:
        claimants.beat(session, "alive", later)  # "doomed" stopped beating at ``now``
        taken = outbox.claim(
            session, "pacs", "new", limit=10, lease_s=300, now=later, claimant_timeout_s=5
        )
    assert {j.id for j in taken} == {j.id for j in lost}
    with sessions() as session:
        rows = {j.id: session.get(ForwardJob, j.id) for j in held + lost}
        for job in held:
            row = rows[job.id]
            assert row is not None and row.claimed_by == "alive"
        for job in lost:
            row = rows[job.id]
            assert row is not None and row.claimed_by == "new"
            assert row.last_error and "taken over from doomed" in row.last_error
    with write_session(sessions) as session:
        # without a heartbeat row (an older node), only the lease decides, as before
        assert (
            outbox.claim(
                session, "pacs", "other", limit=10, lease_s=300, now=later, claimant_timeout_s=5
            )
            == []
        )
        claimants.forget(session, "alive")
        claimants.forget(session, "new")
        # "doomed" holds nothing any more: its row goes
        assert claimants.prune(session, older_than_s=1, now=later + timedelta(seconds=2)) == 1


# -- outages heal ---------------------------------------------------------------------------


def _unreachable(session: Session, job_id: int, now: datetime) -> str | None:
    """One failure of reach (7 days' retention), and refusals would die at 3 attempts."""
    return outbox.fail(
        session,
        job_id,
        "n",
        error="no association",
        max_attempts=3,
        retry_initial_s=5,
        retry_max_s=600,
        now=now,
        reach_retention_s=7 * 86400.0,
    )


def test_reach_failures_wait_days_refusals_die_at_max_attempts(
    sessions: sessionmaker[Session],
) -> None:
    _instances(sessions, 2)
    created = datetime.now(UTC)
    now = created
    with write_session(sessions) as session:
        for _ in range(1500):  # far more than max_attempts: an outage, not a refusal
            [job] = outbox.claim(
                session, "pacs", "n", limit=1, lease_s=10, now=now, any_pending=True
            )
            assert _unreachable(session, job.id, now) == "pending"
            now += timedelta(seconds=30)
        # a week after the job was made, the outage gives up
        late = created + timedelta(days=7, seconds=1)
        [job] = outbox.claim(session, "pacs", "n", limit=1, lease_s=10, now=late)
        assert _unreachable(session, job.id, late) == "dead"
        row = session.get(ForwardJob, job.id)
        assert row is not None and row.last_error and "unreachable for 7.0 days" in row.last_error
        # the other job is refused (a failure status): dead at its third attempt
        states = []
        for _ in range(3):
            [other] = outbox.claim(
                session, "pacs", "n", limit=1, lease_s=10, now=late, any_pending=True
            )
            states.append(
                outbox.fail(
                    session,
                    other.id,
                    "n",
                    error="C-STORE status 0xA700",
                    status=0xA700,
                    max_attempts=3,
                    retry_initial_s=5,
                    retry_max_s=600,
                    now=late,
                )
            )
        assert states == ["pending", "pending", "dead"]


def test_down_destination_one_line_down_one_up_then_everything_at_once(
    node_factory: Callable[..., Any], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="spacing_scp.forward")
    pacs = Pacs(port=free_port())  # not listening yet
    # long per-job backoff: only the destination's probe and "retry at once" can be quick
    dest = _dest("pacs", pacs.port, retry_initial_s=5.0, retry_max_s=600.0)
    cfg = make_config(
        tmp_path / "data", forwarding={"poll_s": 0.2, "lease_s": 5.0, "probe_interval_s": 0.5}
    )
    cfg.destinations = [dest]
    node = node_factory(cfg)
    files = _series(tmp_path, 12)
    assert {r.status for r in send_files(node.port, files)} == {0}
    assert wait_until(lambda: sum(j["attempts"] for j in _jobs(node)) >= 6, timeout=30)
    later = max(datetime.fromisoformat(j["next_attempt_at"]) for j in _jobs(node) if j["attempts"])
    assert (later - datetime.now(UTC)).total_seconds() > 2  # some job would wait on its own
    assert {j["state"] for j in _jobs(node)} <= {"pending", "in_flight"}
    pacs.start()
    try:
        started = time.monotonic()
        assert wait_until(lambda: len(pacs.uids()) == 12, timeout=10)
        recovery_s = time.monotonic() - started
        assert recovery_s < 3.0, recovery_s
        assert wait_until(lambda: {j["state"] for j in _jobs(node)} == {"done"})
        assert all(n == 1 for n in pacs.uids().values())
    finally:
        pacs.stop()
    lines = [r for r in caplog.records if r.name == "spacing_scp.forward"]
    down = [r for r in lines if "destination down" in r.getMessage()]
    up = [r for r in lines if "destination up again" in r.getMessage()]
    assert len(down) == 1 and down[0].levelno == logging.WARNING
    assert re.search(r"; \d+ jobs waiting; probing every <= 0.5 s", down[0].getMessage())
    assert len(up) == 1 and "12 jobs waiting" in up[0].getMessage()
    # no line per job and attempt above DEBUG
    assert not [r for r in lines if r.levelno >= logging.WARNING and "will retry" in r.getMessage()]


# -- loop guard -----------------------------------------------------------------------------


def test_loop_guard_never_routes_an_instance_back_unless_turned_off() -> None:
    pacs = Destination(name="pacs", ae_title="PACS", host="127.0.0.1", port=104)
    qa = Destination(name="qa", ae_title="QA", host="127.0.0.1", port=105)
    both = Destination(
        name="both", ae_title="PACS", host="127.0.0.1", port=104, loop_guard="ae_title_and_host"
    )
    off = Destination(name="off", ae_title="PACS", host="127.0.0.1", port=104, loop_guard="off")
    from_pacs = RoutingFacts(calling_ae_title="PACS", peer_address="127.0.0.1:40000")
    assert route([pacs, qa, off], from_pacs) == ["qa", "off"]
    assert loops_back(both, from_pacs)
    elsewhere = RoutingFacts(calling_ae_title="PACS", peer_address="10.1.2.3:40000")
    assert not loops_back(both, elsewhere) and loops_back(pacs, elsewhere)
    assert route([pacs], RoutingFacts(calling_ae_title="CT1")) == ["pacs"]


def test_instances_the_pacs_sends_are_not_forwarded_back(
    node_factory: Callable[..., Any], tmp_path: Path
) -> None:
    pacs = Pacs().start()
    try:
        node = _node(node_factory, tmp_path / "data", [_dest("pacs", pacs.port)])
        from_pacs = _series(tmp_path, 150)
        assert {r.status for r in send_files(node.port, from_pacs, ae_title="PACS")} == {0}
        from_ct = _series(tmp_path, 3)
        assert {r.status for r in send_files(node.port, from_ct, ae_title="CT1")} == {0}
        assert wait_until(lambda: len(pacs.uids()) == 3)
        time.sleep(1.0)
        assert len(pacs.uids()) == 3 and len(_jobs(node)) == 3
    finally:
        pacs.stop()


# -- resend while forwarding ----------------------------------------------------------------


@pytest.mark.parametrize("send", ["annotated", "original"])
def test_resending_while_forwarding_300_times_never_fails_a_job(
    node_factory: Callable[..., Any], tmp_path: Path, send: str
) -> None:
    pacs = Pacs().start()
    try:
        node = _node(node_factory, tmp_path / "data", [_dest("pacs", pacs.port, send=send)])
        [first] = _series(tmp_path, 1)
        stop = threading.Event()
        statuses: list[int | None] = []

        def resend() -> None:
            while not stop.is_set() and len(statuses) < 300:
                statuses.extend(r.status for r in send_files(node.port, [first] * 20))

        sender = threading.Thread(target=resend)
        sender.start()
        sender.join(240)
        stop.set()
        assert len(statuses) >= 300 and set(statuses) == {0}
        assert wait_until(lambda: {j["state"] for j in _jobs(node)} == {"done"}, timeout=60), {
            j["state"] for j in _jobs(node)
        }
        jobs = _jobs(node)
        errors = [j["last_error"] for j in jobs if j["last_error"]]
        assert not errors, errors[:3]
        assert all(j["attempts"] == 1 for j in jobs)
        assert [code for _, code in pacs.attempts] == [0] * len(pacs.attempts)
    finally:
        pacs.stop()


def test_filestore_replace_never_leaves_the_path_missing(tmp_path: Path) -> None:
    from storage.filestore import FileStore

    store = FileStore(tmp_path / "store")
    rel = Path("a/b/c.dcm")
    store.commit(store.put(rel, lambda fh: fh.write(b"0" * 1000)))
    stop = threading.Event()
    missing: list[int] = []

    def watch() -> None:
        while not stop.is_set():
            if not store.path(rel).exists():
                missing.append(1)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        for i in range(300):
            store.commit(store.put(rel, lambda fh, i=i: fh.write(bytes([i % 256]) * 1000)))
    finally:
        stop.set()
        watcher.join()
    assert not missing
    assert not list(store.path(rel).parent.glob("*.prev"))


def test_make_config_accepts_the_recovery_keys(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, forwarding={"heartbeat_s": 0.5, "claimant_timeout_s": 2.0})
    assert cfg.forwarding.claimant_timeout_s == 2.0
