"""The outbox and routing without the network: claims, leases, backoff, filters."""

from __future__ import annotations

import random
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine, select
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session, sessionmaker

from scp.config import Destination
from scp.services.forwarding.contexts import contexts_for, split_batch
from scp.services.forwarding.routing import RoutingFacts, matches, route, worst_severity
from scp.services.indexing import InstanceEntry, index_instance
from storage import outbox
from storage.db import (
    current_revision,
    ensure_schema,
    head_revision,
    make_engine,
    make_session_factory,
    upgrade,
    write_session,
)
from storage.index import FindingRow
from storage.models import ForwardJob
from tests.dicom_factory import new_uid


def _entry(
    modality: str = "CT", severity: str | None = None, calling: str = "CT1"
) -> InstanceEntry:
    return InstanceEntry(
        study_instance_uid=new_uid(),
        series_instance_uid=new_uid(),
        sop_instance_uid=new_uid(),
        sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
        transfer_syntax_uid="1.2.840.10008.1.2.1",
        path="x.dcm",
        size_bytes=1,
        calling_ae_title=calling,
        called_ae_title="SPACING_SCP",
        received_at=datetime.now(UTC),
        status=0,
        series={"modality": modality, "manufacturer": "ACME"},
        findings=[FindingRow("PIXEL_SPACING_INVALID", severity, "m")] if severity else [],
    )


def _instances(sessions: sessionmaker[Session], n: int, dest: str = "pacs") -> list[int]:
    ids = []
    with write_session(sessions) as session:
        for _ in range(n):
            inst, _ = index_instance(session, _entry())
            outbox.enqueue(session, inst.id, [dest])
            ids.append(inst.id)
    return ids


# -- routing --------------------------------------------------------------------------------


def test_filters_globs_keys_and_severity() -> None:
    ct = RoutingFacts(
        header={"Modality": "CT", "Manufacturer": "ACME Medical"},
        calling_ae_title="CT1",
        finding_codes=("PIXEL_SPACING_INVALID", "DS_INVALID"),
        worst_severity="invalid",
    )
    assert matches({}, ct)
    assert matches({"Modality": ["CT", "MR"]}, ct)
    assert not matches({"Modality": ["MR"]}, ct)
    assert matches({"Manufacturer": ["ACME*"], "calling_ae_title": ["CT?"]}, ct)
    assert not matches({"Manufacturer": ["ACME*"], "calling_ae_title": ["MR1"]}, ct)
    assert matches({"finding_code": ["PIXEL_SPACING_*"]}, ct)
    assert not matches({"finding_code": ["GEOMETRY_*"]}, ct)
    assert matches({"worst_severity": ["invalid"]}, ct)
    assert not matches({"worst_severity": ["ok", "info", "warning", "corrected"]}, ct)
    assert not matches({"StationName": ["?*"]}, ct)  # missing value: the empty string
    assert matches({"StationName": ["*"]}, ct)
    assert worst_severity(["info", "corrected", "warning"]) == "corrected"
    assert worst_severity([]) == "ok"
    dests = [
        Destination(
            name="pacs",
            ae_title="PACS",
            host="h",
            port=104,
            filter={"worst_severity": ["ok", "warning"]},
        ),
        Destination(
            name="qa", ae_title="QA", host="h", port=104, filter={"worst_severity": ["invalid"]}
        ),
        Destination(name="all", ae_title="ALL", host="h", port=104),
    ]
    assert route(dests, ct) == ["qa", "all"]


# -- presentation contexts ------------------------------------------------------------------


def _job(i: int, sop: str, ts: str) -> outbox.ClaimedJob:
    return outbox.ClaimedJob(i, i, "d", 0, sop, f"1.2.3.{i}", ts, "p", None)


def test_contexts_exact_first_then_fallbacks_and_at_most_128() -> None:
    jobs = [
        _job(1, "1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.1.2.5"),
        _job(2, "1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.1.2.1"),
        _job(3, "1.2.840.10008.5.1.4.1.1.4", "1.2.840.10008.1.2.4.70"),
    ]
    cxs = contexts_for(jobs)
    assert [(c.abstract_syntax, c.transfer_syntax) for c in cxs] == [
        ("1.2.840.10008.5.1.4.1.1.2", ("1.2.840.10008.1.2.5",)),
        ("1.2.840.10008.5.1.4.1.1.2", ("1.2.840.10008.1.2.1",)),
        ("1.2.840.10008.5.1.4.1.1.4", ("1.2.840.10008.1.2.4.70",)),
        ("1.2.840.10008.5.1.4.1.1.2", ("1.2.840.10008.1.2.1", "1.2.840.10008.1.2")),
        ("1.2.840.10008.5.1.4.1.1.4", ("1.2.840.10008.1.2.1", "1.2.840.10008.1.2")),
    ]
    many = [_job(i, f"1.2.3.4.{i}", "1.2.840.10008.1.2.1") for i in range(200)]
    groups = split_batch(many)
    assert [len(g) for g in groups] == [64, 64, 64, 8]
    assert all(len(contexts_for(g)) <= 128 for g in groups)


# -- outbox ---------------------------------------------------------------------------------


def test_enqueue_does_not_duplicate_a_pending_job(sessions: sessionmaker[Session]) -> None:
    [inst] = _instances(sessions, 1)
    with write_session(sessions) as session:
        assert outbox.enqueue(session, inst, ["pacs", "qa"]) == ["qa"]
        jobs = outbox.claim(session, "pacs", "n1", limit=10, lease_s=60)
        assert len(jobs) == 1
        # a resend while the job is in flight: a new pending job
        assert outbox.enqueue(session, inst, ["pacs"]) == ["pacs"]
        assert outbox.enqueue(session, inst, ["pacs"]) == []
        # the job in flight fails back to pending: one pending job remains, not two
        state = outbox.fail(
            session,
            jobs[0].id,
            "n1",
            error="x",
            max_attempts=5,
            retry_initial_s=1,
            retry_max_s=1,
        )
        assert state == "pending"
        rows = session.scalars(select(ForwardJob).where(ForwardJob.destination == "pacs")).all()
        assert [(r.id, r.state) for r in rows] == [(jobs[0].id, "pending")]


@pytest.mark.parametrize("settle", ["fail", "release"])
@pytest.mark.parametrize("first", ["resend", "worker"])
def test_a_resend_racing_its_job_back_to_pending_leaves_one_pending_job(
    sessions: sessionmaker[Session], settle: str, first: str
) -> None:
    """A resend queues the instance while a worker puts its in-flight job back to pending,
    in two transactions at once (either one first): one pending job remains, not two."""
    [inst] = _instances(sessions, 1)
    with write_session(sessions) as session:
        [job] = outbox.claim(session, "pacs", "n1", limit=5, lease_s=60)

    def resend(session: Session) -> None:
        outbox.enqueue(session, inst, ["pacs"])

    def back_to_pending(session: Session) -> None:
        if settle == "fail":
            outbox.fail(
                session, job.id, "n1", error="x", max_attempts=5, retry_initial_s=1, retry_max_s=1
            )
        else:
            outbox.release(session, [job.id], "n1")

    steps = [resend, back_to_pending] if first == "resend" else [back_to_pending, resend]

    def second() -> None:
        with write_session(sessions) as session:
            steps[1](session)

    with write_session(sessions) as session:
        steps[0](session)
        thread = threading.Thread(target=second)
        thread.start()
        thread.join(0.5)
        assert thread.is_alive()  # waits for the first transaction (row or database lock)
    thread.join(30)
    with sessions() as session:
        states = session.scalars(select(ForwardJob.state).where(ForwardJob.instance_id == inst))
        assert list(states) == ["pending"]


def test_concurrent_claims_never_share_a_job(database_url: str) -> None:
    """Two "processes" (engines) with several threads each claim the same queue
    (SQLite: serialized write transactions; PostgreSQL: FOR UPDATE SKIP LOCKED)."""
    url = database_url
    first = make_engine(url)
    ensure_schema(first)
    factories = [make_session_factory(first), make_session_factory(make_engine(url))]
    _instances(factories[0], 300)
    claimed: dict[str, list[int]] = {}
    lock = threading.Lock()
    # all claimers start together: a first thread started alone could drain the queue
    # before the others exist (seen once in CI: one claimer took all 300)
    start = threading.Barrier(6)

    def worker(name: str, factory: sessionmaker[Session]) -> None:
        mine: list[int] = []
        start.wait(30)
        while True:
            with write_session(factory) as session:
                jobs = outbox.claim(session, "pacs", name, limit=7, lease_s=60)
            if not jobs:
                break
            mine.extend(j.id for j in jobs)
            time.sleep(0.002)  # a real worker sends its jobs before it claims again
        with lock:
            claimed[name] = mine

    threads = [
        threading.Thread(target=worker, args=(f"node{i}", factories[i % 2])) for i in range(6)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    every = [i for ids in claimed.values() for i in ids]
    assert len(every) == 300 and len(set(every)) == 300
    assert sum(1 for ids in claimed.values() if ids) >= 2


def test_lease_expiry_hands_a_job_over_and_the_old_holder_cannot_settle_it(
    sessions: sessionmaker[Session],
) -> None:
    [inst] = _instances(sessions, 1)
    now = datetime.now(UTC)
    with write_session(sessions) as session:
        [job] = outbox.claim(session, "pacs", "old", limit=5, lease_s=10, now=now)
        assert outbox.claim(session, "pacs", "new", limit=5, lease_s=10, now=now) == []
        later = now + timedelta(seconds=11)
        [again] = outbox.claim(session, "pacs", "new", limit=5, lease_s=10, now=later)
        assert again.id == job.id and again.instance_id == inst
        assert not outbox.complete(session, job.id, "old", 0)
        assert outbox.renew(session, [job.id], "old", 10) == set()
        assert outbox.complete(session, job.id, "new", 0)
        row = session.get(ForwardJob, job.id, populate_existing=True)
        assert row is not None and row.state == "done" and row.attempts == 1
        assert row.last_error and "taken over" in row.last_error


def test_fail_backs_off_then_dies_and_retry_revives(sessions: sessionmaker[Session]) -> None:
    [inst] = _instances(sessions, 1)
    rng = random.Random(1)
    now = datetime.now(UTC)
    waits = []
    with write_session(sessions) as session:
        for attempt in range(1, 4):
            [job] = outbox.claim(session, "pacs", "n", limit=1, lease_s=10, now=now)
            state = outbox.fail(
                session,
                job.id,
                "n",
                error="C-STORE status 0xA700",
                status=0xA700,
                max_attempts=3,
                retry_initial_s=2,
                retry_max_s=5,
                rng=rng,
                now=now,
            )
            row = session.get(ForwardJob, job.id)
            assert row is not None
            if attempt < 3:
                assert state == "pending"
                due = outbox.as_utc(row.next_attempt_at)
                assert due is not None
                waits.append((due - now).total_seconds())
                now = due
            else:
                assert state == "dead" and row.last_status == 0xA700
                assert row.last_error and "gave up after 3 attempts" in row.last_error
        assert 1 <= waits[0] <= 2 and 2 <= waits[1] <= 4
        assert outbox.retry(session, dead=True) == 1
        [job] = outbox.claim(session, "pacs", "n", limit=1, lease_s=10)
        assert job.instance_id == inst and job.attempts == 0
    for attempts in range(1, 30):
        delay = outbox.backoff_s(attempts, 5, 600, rng)
        assert min(600, 5 * 2 ** (attempts - 1)) / 2 <= delay <= 600


def test_claim_is_skip_locked_on_postgresql() -> None:
    stmt = (
        select(ForwardJob.id)
        .where(ForwardJob.destination == "pacs", outbox._due(datetime.now(UTC)))
        .limit(5)
        .with_for_update(skip_locked=True)
    )
    sql = str(stmt.compile(dialect=postgresql.dialect()))  # type: ignore[no-untyped-call]
    assert "FOR UPDATE SKIP LOCKED" in sql


def test_migration_adds_and_removes_forward_jobs(tmp_path: Path) -> None:
    from alembic import command

    from storage.db import alembic_config

    engine = create_engine(f"sqlite:///{tmp_path / 'm.sqlite3'}")
    command.upgrade(alembic_config(engine), "0001")
    assert upgrade(engine) == ("0001", head_revision())
    with engine.connect() as conn:
        assert conn.exec_driver_sql("select count(*) from forward_jobs").scalar() == 0
    command.downgrade(alembic_config(engine), "0001")
    assert current_revision(engine) == "0001"


def test_shipped_config_documents_forwarding_and_a_valid_destinations_example(
    tmp_path: Path,
) -> None:
    from scp.config import ForwardingConfig, load_config

    shipped = Path(__file__).resolve().parents[1] / "config" / "spacing-scp.toml"
    assert load_config(shipped, environ={}).forwarding == ForwardingConfig()
    example = shipped.read_text().split("# [[destinations]]", 1)[1]
    lines = [
        line[2:] if line.startswith("# ") else line.lstrip("#") for line in example.splitlines()
    ]
    path = tmp_path / "example.toml"
    path.write_text("[[destinations]]\n" + "\n".join(lines))
    cfg = load_config(path, environ={})
    assert [d.name for d in cfg.destinations] == ["pacs", "qa", "cloud"]
    assert cfg.destinations[2].type == "stow-rs"
    assert cfg.destinations[0].filter["worst_severity"] == ["ok", "info", "warning", "corrected"]
