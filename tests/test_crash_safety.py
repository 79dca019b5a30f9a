"""Issue 6, item 6: SIGKILL in the middle of a 200-instance transfer loses nothing.

dcmtk's storescu sends a folder of 200 small CTs to a ``spacing-scp serve`` process;
the node is killed with SIGKILL while the transfer runs, and started again on the
same data directory.  Then:

* every instance storescu saw answered Success is stored, indexed and queued for
  forwarding (a ``[[destinations]]`` is configured, PS3.4 B.2.3: Success means the
  node took responsibility);
* start-up recovery left no temporary file, no ``.part`` and no ``.prev`` copy;
* the index and the store agree (a file renamed into place just before the kill,
  never answered, may exist unindexed: the sender's retry replaces it);
* storescu's retry of the whole folder succeeds, and the node then holds exactly
  the 200 instances, each once, each with its forwarding job.
"""

from __future__ import annotations

import re
import signal
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread

from tests.conftest import dcmtk_env, dcmtk_tool, free_port
from tests.dicom_factory import new_uid, write_ct

N = 200


def _folder(tmp: Path) -> dict[str, str]:
    """200 CTs of one series; returns file path -> SOP Instance UID."""
    study, series = new_uid(), new_uid()
    out: dict[str, str] = {}
    for i in range(N):
        path = write_ct(
            tmp / "in" / f"ct{i:03d}.dcm",
            study=study,
            series=series,
            rows=32,
            columns=32,
            position=(0.0, 0.0, float(i)),
            instance_number=i + 1,
        )
        out[str(path)] = str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)
    return out


def _wait_index(data: Path, uids: set[str], timeout: float = 30) -> dict[str, str]:
    """The index once it holds ``uids`` (the indexer runs beside the receive path)."""
    deadline = time.monotonic() + timeout
    while True:
        index = _index(data)
        if uids <= set(index) or time.monotonic() > deadline:
            return index
        time.sleep(0.1)


def _successes(storescu_log: str) -> set[str]:
    """Files storescu sent and saw answered Success (``-v`` output)."""
    done: set[str] = set()
    current: str | None = None
    for line in storescu_log.splitlines():
        m = re.search(r"Sending file: (.+)$", line)
        if m:
            current = m.group(1).strip()
        elif "Received Store Response (Success)" in line and current is not None:
            done.add(current)
            current = None
    return done


def _index(data: Path) -> dict[str, str]:
    con = sqlite3.connect(data / "index.sqlite3")
    try:
        return dict(con.execute("SELECT sop_instance_uid, path FROM instances").fetchall())
    finally:
        con.close()


def _jobs(data: Path) -> dict[str, int]:
    """SOP Instance UID -> number of forwarding jobs (issue 5's outbox)."""
    con = sqlite3.connect(data / "index.sqlite3")
    try:
        rows = con.execute(
            "SELECT i.sop_instance_uid, COUNT(j.id) FROM instances i "
            "LEFT JOIN forward_jobs j ON j.instance_id = i.id GROUP BY i.id"
        ).fetchall()
    finally:
        con.close()
    return {uid: n for uid, n in rows}


def _store_files(data: Path) -> set[str]:
    return {str(p.relative_to(data / "instances")) for p in (data / "instances").rglob("*.dcm")}


def _tmp_files(data: Path) -> list[Path]:
    """Files in the receive area (``tmp/``, or the node's own folder below it); the
    running processes' metrics (``tmp/metrics-<host>-<port>/``) are not transfers."""
    return [
        p
        for p in (data / "tmp").rglob("*")
        if p.is_file() and not p.parent.name.startswith("metrics-")
    ]


def _config(tmp: Path) -> Path:
    # A destination nobody listens on: jobs stay queued (retrying) for the whole test.
    path = tmp / "node.toml"
    path.write_text(
        "[[destinations]]\n"
        'name = "pacs"\nae_title = "PACS"\nhost = "127.0.0.1"\n'
        f"port = {free_port()}\nretry_initial_s = 600\nretry_max_s = 600\n"
    )
    return path


@pytest.mark.dcmtk
def test_sigkill_mid_transfer_then_restart_and_retry(node_process: Any, tmp_path: Path) -> None:
    storescu = dcmtk_tool("storescu")
    files = _folder(tmp_path)
    data = tmp_path / "data"
    config = _config(tmp_path)
    node = node_process(data_dir=data, config=config)
    sender_args = [storescu, "-v", "-aet", "CT1", "-aec", "SPACING_SCP", "+sd", "127.0.0.1"]

    def send() -> subprocess.Popen[str]:
        return subprocess.Popen(
            [*sender_args, str(node.port), str(tmp_path / "in")],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=dcmtk_env(),
        )

    sender = send()
    deadline = time.monotonic() + 60
    while node.log_path.read_text().count("C-STORE sop=") < 40:
        assert time.monotonic() < deadline, "the transfer never got going"
        assert sender.poll() is None, "storescu finished before the kill"
        time.sleep(0.01)
    node.stop(signal.SIGKILL, timeout=10)  # the node and its indexer process
    log, _ = sender.communicate(timeout=60)
    answered = _successes(log)
    assert 0 < len(answered) < N, f"{len(answered)} answered: the kill was not mid-transfer"

    # Restart on the same data directory.
    again = node_process(data_dir=data, port=node.port, config=config)
    assert not _tmp_files(data), "temporary files survived start-up"
    assert not list(data.rglob("*.prev")) and not list(data.rglob("*.part"))
    # the indexer beside the receive path indexes the journal's records after the restart
    index = _wait_index(data, {files[p] for p in answered})
    stored = _store_files(data)
    jobs = _jobs(data)
    for path in answered:
        uid = files[path]
        assert uid in index, f"{uid} was answered Success but is not indexed"
        assert index[uid] in stored, f"{uid} is indexed but its file is missing"
        assert jobs[uid] == 1, f"{uid} was answered Success but has no forwarding job"
    assert set(index.values()) <= stored  # nothing indexed without its file
    assert len(stored - set(index.values())) <= 1  # at most the one in flight at the kill

    # The sender retries the whole folder: all 200 succeed (resends of the answered ones).
    retry = subprocess.run(
        [*sender_args, str(again.port), str(tmp_path / "in")],
        capture_output=True,
        text=True,
        timeout=120,
        env=dcmtk_env(),
    )
    assert retry.returncode == 0, retry.stdout[-2000:] + retry.stderr[-2000:]
    assert len(_successes(retry.stdout + retry.stderr)) == N
    index = _wait_index(data, set(files.values()))
    assert set(index) == set(files.values())
    assert set(index.values()) == _store_files(data)
    assert all(n >= 1 for n in _jobs(data).values())
    assert again.stop(signal.SIGTERM) == 0
    assert not _tmp_files(data)
