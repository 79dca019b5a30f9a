"""Issue 14: the receive path answers after the file and its journal record; the indexer
beside it indexes, folds the series geometry and queues forward jobs in batches.

* the journal (storage/journal.py): records survive, torn tails are skipped, sealed
  segments read to their end are deleted, positions are committed with the index rows;
* read-your-writes: C-FIND and the HTTP API see every instance acknowledged before
  their request, even while the indexer is held back (then within 2 s, with a warning);
* a resend behaves as before (one row, receive_count 2, the new file);
* a record the index refuses is passed over without stopping the others;
* SIGKILL of the whole node at many points (between Success and indexing, mid-batch,
  the indexer alone): after a restart every acknowledged instance is indexed once and
  forwarded.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from sqlalchemy import func, select

from scp.pipeline.model import PipelineResult
from scp.services.indexer import Indexer, JournalItem
from scp.services.indexing import InstanceEntry
from storage import journal
from storage.db import make_engine, make_session_factory
from storage.models import IngestJournal, Instance
from tests.conftest import make_config, send_files
from tests.dicom_factory import new_uid, write_ct
from tests.pacs import Pacs, wait_until
from tests.test_find import c_find, identifier


def _series(tmp: Path, n: int, tag: str = "s") -> tuple[str, list[Path]]:
    study, series = new_uid(), new_uid()
    return series, [
        write_ct(
            tmp / "in" / f"{tag}{i:03d}.dcm",
            study=study,
            series=series,
            instance_number=i + 1,
            position=(0.0, 0.0, float(i)),
            rows=16,
            columns=16,
        )
        for i in range(n)
    ]


# -- the journal --------------------------------------------------------------------------------


def test_journal_records_tail_and_sealed_segments(tmp_path: Path) -> None:
    writer = journal.JournalWriter(tmp_path, "host-104", segment_bytes=64)
    ends = [writer.append(f"record {i}".encode() * 4) for i in range(5)]
    assert len({segment for segment, _ in ends}) > 1, "segments rotate past segment_bytes"
    got = []
    for path in journal.segments(tmp_path):
        read = journal.read_segment(path, 0, 100)
        assert read.complete and not read.trailing_bytes and not read.corrupt
        got += [r.payload for r in read.records]
    assert got == [f"record {i}".encode() * 4 for i in range(5)]
    # a torn record at the end of the open segment: not (yet) a record
    with open(tmp_path / writer.segment, "ab") as fh:
        fh.write(b"\x40\x00\x00\x00abc")
    read = journal.read_segment(tmp_path / writer.segment, 0, 100)
    assert read.trailing_bytes == 7
    writer.close()
    # a new writer (a restart) starts a new segment: the old ones are sealed
    again = journal.JournalWriter(tmp_path, "host-104")
    every = journal.segments(tmp_path)
    assert again.segment == every[-1].name
    assert all(journal.sealed(p, every) for p in every[:-1])
    assert not journal.sealed(every[-1], every)
    assert journal.segments(tmp_path, owner="other-104") == []
    again.close()


def _entry(tmp: Path, sop: str, series: str, study: str) -> InstanceEntry:
    from datetime import UTC, datetime

    return InstanceEntry(
        study_instance_uid=study,
        series_instance_uid=series,
        sop_instance_uid=sop,
        sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
        transfer_syntax_uid="1.2.840.10008.1.2.1",
        path=f"{study}/{series}/{sop}.dcm",
        size_bytes=10,
        calling_ae_title="T",
        called_ae_title="SPACING_SCP",
        received_at=datetime.now(UTC),
        status=0,
    )


def test_indexer_batches_passes_over_a_bad_record_and_drops_read_segments(
    tmp_path: Path,
) -> None:
    from storage.db import ensure_schema

    engine = make_engine(f"sqlite:///{tmp_path / 'index.sqlite3'}")
    ensure_schema(engine)
    sessions = make_session_factory(engine)
    jdir = tmp_path / "journal"
    writer = journal.JournalWriter(jdir, "h-1")
    study, series = new_uid(), new_uid()
    for _ in range(3):
        item = JournalItem(_entry(tmp_path, new_uid(), series, study), PipelineResult(), 0.0)
        writer.append(item.encode())
    writer.append(b"not a journal item")  # a record the indexer cannot use
    last = JournalItem(_entry(tmp_path, new_uid(), series, study), PipelineResult(), 0.0)
    writer.append(last.encode())
    writer.close()
    journal.JournalWriter(jdir, "h-1").close()  # a restart: the first segment is sealed

    indexer = Indexer(jdir, sessions, owner="h")
    assert indexer.catch_up() == 5
    assert (indexer.indexed, indexer.failed) == (4, 1)
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(Instance)) == 4
        rows = session.scalars(select(IngestJournal)).all()
    # the sealed segment, read to its end, is gone with its row; the open one stays
    assert rows == [] and [p.name for p in journal.segments(jdir)] == ["h-1.00000002.jnl"]
    assert indexer.catch_up() == 0  # nothing twice
    engine.dispose()


# -- a node with the indexer beside the receive path -----------------------------------------


def test_readers_see_what_was_acknowledged_even_while_the_indexer_lags(
    node_factory: Any, tmp_path: Path
) -> None:
    node = node_factory(make_config(tmp_path / "data", node={"indexer": "process"}))
    assert node.indexer is not None and node.ingestor.journal is not None
    node.indexer.indexer.poll_s = 0.5  # an indexer that looks only twice a second
    series, files = _series(tmp_path, 6)
    assert {r.status for r in send_files(node.port, files)} == {0}
    study = str(dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
    query = identifier("IMAGE", StudyInstanceUID=study, SeriesInstanceUID=series, SOPInstanceUID="")
    found = c_find(node.port, query)
    assert len(found.identifiers) == 6
    # HTTP: the same, and no warning
    series2, files2 = _series(tmp_path, 3, "t")
    assert {r.status for r in send_files(node.port, files2)} == {0}
    url = f"http://127.0.0.1:{node.api.port}/series/{series2}/instances"
    with urllib.request.urlopen(url, timeout=10) as rsp:
        assert rsp.headers.get("Warning") is None
        body = json.loads(rsp.read())
    items = body["items"] if isinstance(body, dict) else body
    assert len(items) == 3
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{node.api.port}/metrics", timeout=10).read()
    assert b"spacing_scp_index_lag_last_seconds" in metrics
    assert b"spacing_scp_index_pending_bytes 0" in metrics


def test_a_reader_waits_at_most_two_seconds_then_answers_with_a_warning(
    node_factory: Any, tmp_path: Path
) -> None:
    node = node_factory(make_config(tmp_path / "data", node={"indexer": "process"}))
    node.indexer.stop()  # no indexer at all
    _, files = _series(tmp_path, 2)
    assert {r.status for r in send_files(node.port, files)} == {0}
    started = time.monotonic()
    with urllib.request.urlopen(f"http://127.0.0.1:{node.api.port}/series", timeout=10) as rsp:
        assert "index behind" in (rsp.headers.get("Warning") or "")
    assert 1.9 <= time.monotonic() - started < 5
    assert node.catch_up() == 2  # the journal kept both


def test_resend_is_one_row_with_the_new_file(node_factory: Any, tmp_path: Path) -> None:
    node = node_factory(make_config(tmp_path / "data", node={"indexer": "process"}))
    _, files = _series(tmp_path, 1)
    assert send_files(node.port, files)[0].status == 0
    assert send_files(node.port, files)[0].status == 0
    assert node.visibility.wait()
    with node.sessions() as session:
        rows = session.scalars(select(Instance)).all()
    assert len(rows) == 1 and rows[0].receive_count == 2
    assert not list((node.cfg.data_dir / "tmp").rglob("*.prev"))


# -- SIGKILL at many points --------------------------------------------------------------------


def _indexed_and_jobs(data: Path) -> tuple[dict[str, int], dict[str, int]]:
    """SOP Instance UID -> receive count, and -> number of forward jobs."""
    con = sqlite3.connect(data / "index.sqlite3")
    try:
        counts = dict(con.execute("SELECT sop_instance_uid, receive_count FROM instances"))
        jobs = dict(
            con.execute(
                "SELECT i.sop_instance_uid, COUNT(j.id) FROM instances i "
                "LEFT JOIN forward_jobs j ON j.instance_id = i.id GROUP BY i.id"
            )
        )
    finally:
        con.close()
    return counts, jobs


def _indexer_pid(node: Any) -> int:
    for pid in node.children():
        if b"--indexer-process" in Path(f"/proc/{pid}/cmdline").read_bytes():
            return pid
    raise AssertionError("no indexer process")


@pytest.mark.parametrize(
    "point",
    [
        "between_success_and_indexing",  # the indexer is held (SIGSTOP): nothing indexed
        "mid_batch",  # the indexer runs; killed while batches commit
        "indexer_alone",  # only the indexer dies; the node restarts it
    ],
)
def test_sigkill_at_many_points_every_acknowledged_instance_indexed_and_forwarded(
    node_process: Any, tmp_path: Path, point: str
) -> None:
    pacs = Pacs().start()
    config = tmp_path / "node.toml"
    config.write_text(
        "[forwarding]\npoll_s = 0.2\nlease_s = 2.0\n\n"
        '[[destinations]]\nname = "pacs"\nae_title = "PACS"\nhost = "127.0.0.1"\n'
        f"port = {pacs.port}\nretry_initial_s = 0.2\nretry_max_s = 1.0\n"
    )
    data = tmp_path / "data"
    try:
        node = node_process(data_dir=data, config=config)
        assert wait_until(lambda: "indexer running" in node.log_path.read_text(), 60)
        indexer = _indexer_pid(node)
        if point == "between_success_and_indexing":
            os.kill(indexer, signal.SIGSTOP)
        _, files = _series(tmp_path, 40)
        uids = {str(dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in files}
        results = send_files(node.port, files)
        assert {r.status for r in results} == {0}
        if point == "indexer_alone":
            os.kill(indexer, signal.SIGKILL)
            assert wait_until(lambda: "restarting it" in node.log_path.read_text(), 30)
        else:
            if point == "between_success_and_indexing":
                assert not _indexed_and_jobs(data)[0], "indexed although the indexer was held"
            node.stop(signal.SIGKILL, timeout=10)
            node_process(data_dir=data, config=config, port=node.port)
        assert wait_until(lambda: set(_indexed_and_jobs(data)[0]) == uids, 60)
        counts, jobs = _indexed_and_jobs(data)
        assert set(counts.values()) == {1}, "an instance was indexed twice"
        assert all(jobs[u] == 1 for u in uids)
        assert wait_until(lambda: set(pacs.uids()) >= uids, 60), "not every instance forwarded"
    finally:
        pacs.stop()


def test_forwarding_threads_yield_the_cpu_to_receiving(tmp_path: Path) -> None:
    """A thread opening an association to a destination drops to nice 10 (and the
    association's own threads, started from it, inherit it); the receiving threads stay."""
    import threading

    from scp.net.scu import FORWARD_NICE, StorageSCU
    from scp.services.forwarding.sender import ContextProposal
    from scp.services.forwarding.worker import WorkerSettings

    pacs = Pacs().start()
    cfg = make_config(tmp_path / "data")
    seen: dict[str, int] = {}
    try:
        from scp.config import Destination

        dest = Destination(name="p", ae_title="PACS", host="127.0.0.1", port=pacs.port)
        scu = StorageSCU(WorkerSettings.from_config(cfg).association(dest))

        def send() -> None:
            assoc = scu.open([ContextProposal("1.2.840.10008.5.1.4.1.1.2", ("1.2.840.10008.1.2",))])
            seen["sender"] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
            assoc.release()

        thread = threading.Thread(target=send)
        thread.start()
        thread.join(30)
    finally:
        pacs.stop()
    assert seen["sender"] == FORWARD_NICE
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) < FORWARD_NICE


def test_no_process_outlives_the_first_even_after_sigkill(
    node_process: Any, tmp_path: Path
) -> None:
    """The indexer and the extra receiving process hold the read end of the first
    process's lifeline pipe: SIGKILL of the first alone ends them too (issue 16)."""
    node = node_process(data_dir=tmp_path / "data", env={"SPACING_SCP_NODE_PROCESSES": "2"})
    assert wait_until(lambda: len(node.children()) == 2, 60)
    children = node.children()
    cmdlines = [Path(f"/proc/{pid}/cmdline").read_bytes() for pid in children]
    assert any(b"--indexer-process" in c for c in cmdlines)
    assert any(b"--worker" in c for c in cmdlines)
    assert all(os.getpgid(pid) == os.getpgid(node.proc.pid) for pid in children)
    node.proc.kill()
    node.proc.wait(10)

    def gone() -> bool:
        alive = []
        for pid in children:
            try:
                state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if state != "Z":
                alive.append(pid)
        return not alive

    assert wait_until(gone, 60), "a child of the node outlived it"


def test_series_geometry_states_stay_in_memory_between_instances_and_batches(
    node_factory: Any, tmp_path: Path
) -> None:
    """Issue 14: the indexer folds each instance into its series' state as kept in memory
    (not decoded from the index's JSON again), and the state it saves is the one the
    inline path (which decodes every time) saves for the same instances."""
    from storage.models import Series

    series, files = _series(tmp_path, 30)
    # a gap and a slice out of order, so the state has something to say
    files = files[:10] + files[12:] + [files[10]]
    states = {}
    for mode in ("process", "inline"):
        node = node_factory(make_config(tmp_path / mode, node={"indexer": mode}))
        for start in range(0, len(files), 7):  # several associations: several batches
            assert {r.status for r in send_files(node.port, files[start : start + 7])} == {0}
        if node.indexer is not None:
            kept = node.indexer.indexer.states
            wait_until(lambda kept=kept: kept.hits + kept.misses >= len(files) - 1, 10)
            assert kept.hits >= len(files) - 3, (kept.hits, kept.misses)
        with node.sessions() as session:
            row = session.scalar(select(Series).where(Series.series_instance_uid == series))
            assert row is not None
            states[mode] = (row.geometry_state, row.finding_codes)
    assert states["process"] == states["inline"]
