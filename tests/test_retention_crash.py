"""Issue 20: SIGKILL during a deletion of 1,000 instances, restart: index and store agree.

A node receives 1,000 small CTs (one study, four series) and stops.  For each kill point a
copy of its data directory is given to a child process that deletes them (a person's
forced deletion of the study, or the retention pass in batches of 250) and is killed
with SIGKILL at that point: inside the transaction that marks them, right after its
commit, halfway through the unlinks, after the unlinks before the pending rows go, or
at a random moment of the pass.  A node started on the copy then finishes what was
committed; every index row's file exists and every file is indexed.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from storage.models import Deletion, Instance, PendingUnlink, Series
from tests.conftest import make_config, send_files
from tests.dicom_factory import new_uid, write_ct

N = 1000

CHILD = r"""
import os, signal, sys
from pathlib import Path
from tests.conftest import make_config
from storage import retention as r
from storage.db import make_engine, make_session_factory
from storage.filestore import FileStore
from scp.services.retention import Retention

data, mode, point, study = Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
cfg = make_config(data, retention={"enabled": True, "keep_days": 0, "settle_s": 0,
    "min_free_mb": 0, "only_when_delivered": False, "batch_size": 250})
sessions = make_session_factory(make_engine(cfg.database_url))
retention = Retention(sessions, FileStore(data, tmp_name="child"), cfg.retention)

def die(*_a, **_k):
    os.kill(os.getpid(), signal.SIGKILL)

if point == "in_mark":
    r._drop_empty = die
elif point == "after_commit":
    r.finish_pending = die
elif point == "mid_unlink":
    real, count = r._unlink, [0]
    def unlink(path):
        count[0] += 1
        if count[0] == 300:
            die()
        return real(path)
    r._unlink = unlink
elif point == "before_forget":
    r._prune = die
print("ready", flush=True)
if mode == "manual":
    retention.delete("study", study, actor="test", force=True)
else:
    retention.run_once()
print("finished", flush=True)
"""


@pytest.fixture(scope="module")
def received(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A data directory holding 1,000 indexed instances (the node stopped); the study UID."""
    from scp.node import Node

    root = tmp_path_factory.mktemp("crash")
    study = new_uid()
    files = []
    for s in range(4):
        series = new_uid()
        files += [
            write_ct(
                root / "in" / f"{s}-{i:04d}.dcm",
                study=study,
                series=series,
                rows=8,
                columns=8,
                position=(0.0, 0.0, float(i)),
                instance_number=i + 1,
            )
            for i in range(N // 4)
        ]
    node = Node(make_config(root / "data"))
    node.start()
    try:
        assert {r.status for r in send_files(node.port, files)} == {0}
    finally:
        node.stop(grace_s=2)
    return root / "data", study


def _agree(node: Any) -> tuple[int, int]:
    """Assert index and store agree; return (instances left, instances recorded deleted)."""
    with node.sessions() as session:
        paths = set(session.scalars(select(Instance.path)))
        pending = session.scalar(select(func.count()).select_from(PendingUnlink))
        deleted = session.scalar(select(func.coalesce(func.sum(Deletion.instances), 0)))
        counts = session.scalar(select(func.coalesce(func.sum(Series.instance_count), 0)))
    on_disk = {
        str(p.relative_to(node.store.instances)) for p in node.store.instances.rglob("*.dcm")
    }
    missing = {p for p in paths if not (node.store.instances / p).exists()}
    assert not missing, f"{len(missing)} index rows without their file"
    assert on_disk == paths, f"{len(on_disk - paths)} files nobody indexed"
    assert pending == 0
    assert counts == len(paths)
    return len(paths), int(deleted or 0)


@pytest.mark.parametrize(
    ("mode", "point"),
    [
        ("manual", "in_mark"),
        ("manual", "after_commit"),
        ("manual", "mid_unlink"),
        ("manual", "before_forget"),
        ("pass", "mid_unlink"),
        ("pass", "timed"),
    ],
)
def test_sigkill_during_deletion_then_restart(
    received: tuple[Path, str],
    tmp_path: Path,
    node_factory: Callable[..., Any],
    mode: str,
    point: str,
) -> None:
    source, study = received
    data = tmp_path / "data"
    shutil.copytree(source, data)
    repo = Path(__file__).resolve().parents[1]
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(data), mode, point, study],
        cwd=repo,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(repo)},
    )
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "ready"
    if point == "timed":
        # somewhere inside the pass: its batches mark, commit and unlink 250 at a time
        try:
            child.wait(timeout=0.4)
        except subprocess.TimeoutExpired:
            child.send_signal(signal.SIGKILL)
    code = child.wait(timeout=120)
    _, err = child.communicate()
    if point != "timed":
        assert code == -signal.SIGKILL, err
    node = node_factory(make_config(data))  # restart: recovery finishes committed deletions
    left, deleted = _agree(node)
    assert left + deleted == N
    if point == "in_mark":
        assert (left, deleted) == (N, 0)  # the transaction never committed
    elif mode == "manual":
        assert (left, deleted) == (0, N)
