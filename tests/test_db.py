"""storage.db.SQLiteWriterQueue: SQLite writers take turns on a lock, across processes."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import text

from storage.db import (
    SQLiteWriterQueue,
    WriterQueueTimeout,
    make_engine,
    make_session_factory,
    write_session,
)

_TRY_LOCK = (
    "import fcntl, os, sys\n"
    "fd = os.open(sys.argv[1], os.O_RDWR)\n"
    "try:\n"
    "    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)\n"
    "except BlockingIOError:\n"
    "    sys.exit(3)\n"
)


def _other_process_can_lock(path: Path) -> bool:
    done = subprocess.run([sys.executable, "-c", _TRY_LOCK, str(path)], check=False)
    assert done.returncode in (0, 3)
    return done.returncode == 0


def test_turn_holds_the_file_lock_until_the_outermost_exit(tmp_path: Path) -> None:
    db = tmp_path / "index.sqlite3"
    queue = SQLiteWriterQueue(str(db))
    lock_file = tmp_path / "index.sqlite3.writelock"
    with queue.turn():
        assert lock_file.exists()
        with queue.turn():  # re-entrant in one thread
            pass
        assert not _other_process_can_lock(lock_file)
    assert _other_process_can_lock(lock_file)


def test_threads_take_turns(tmp_path: Path) -> None:
    queue = SQLiteWriterQueue(str(tmp_path / "index.sqlite3"))
    inside: list[int] = []
    overlaps: list[int] = []

    def writer(i: int) -> None:
        for _ in range(20):
            with queue.turn():
                inside.append(i)
                if len(inside) > 1:
                    overlaps.append(i)
                time.sleep(0.0005)
                inside.remove(i)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert overlaps == []


def test_in_memory_database_has_no_lock_file(tmp_path: Path) -> None:
    queue = SQLiteWriterQueue(":memory:")
    with queue.turn():
        pass
    assert list(tmp_path.iterdir()) == []


def test_write_session_queues_on_the_engines_lock(tmp_path: Path) -> None:
    db = tmp_path / "index.sqlite3"
    engine = make_engine(f"sqlite:///{db}")
    sessions = make_session_factory(engine)
    with write_session(sessions) as session:
        session.execute(text("CREATE TABLE t (x INTEGER)"))
        assert not _other_process_can_lock(tmp_path / "index.sqlite3.writelock")
    assert _other_process_can_lock(tmp_path / "index.sqlite3.writelock")
    engine.dispose()


_HOLD_LOCK = (
    "import fcntl, os, sys, time\n"
    "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)\n"
    "fcntl.flock(fd, fcntl.LOCK_EX)\n"
    "print('held', flush=True)\n"
    "time.sleep(60)\n"
)


def test_a_stuck_writer_in_another_process_bounds_the_wait(tmp_path: Path) -> None:
    """A process that keeps the write lock makes the others fail after the busy timeout
    with an error naming the lock file (issue 16), instead of stalling every writer."""
    db = tmp_path / "index.sqlite3"
    lock_file = tmp_path / "index.sqlite3.writelock"
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD_LOCK, str(lock_file)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        queue = SQLiteWriterQueue(str(db), timeout_s=0.5)
        started = time.monotonic()
        expected = r"waited 0\.5 s .*index\.sqlite3\.writelock"
        with pytest.raises(WriterQueueTimeout, match=expected), queue.turn():
            pass
        assert 0.5 <= time.monotonic() - started < 3
    finally:
        holder.kill()
        holder.wait()
    with SQLiteWriterQueue(str(db), timeout_s=0.5).turn():  # free again once it is gone
        pass


def test_a_stuck_writer_thread_bounds_the_wait(tmp_path: Path) -> None:
    queue = SQLiteWriterQueue(str(tmp_path / "index.sqlite3"), timeout_s=0.3)
    held, release = threading.Event(), threading.Event()

    def stuck() -> None:
        with queue.turn():
            held.set()
            release.wait(30)

    thread = threading.Thread(target=stuck)
    thread.start()
    try:
        assert held.wait(10)
        with pytest.raises(WriterQueueTimeout, match="another thread"), queue.turn():
            pass
    finally:
        release.set()
        thread.join(10)
