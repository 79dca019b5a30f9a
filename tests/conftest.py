"""Shared fixtures: a real node on a free localhost port, real peers, real files."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom import dcmread
from pynetdicom import AE, _config
from sqlalchemy.orm import Session, sessionmaker

from scp.config import Config, load_config

REQUIRE_DCMTK = os.environ.get("SPACING_SCP_REQUIRE_DCMTK") == "1"
PYDICOM_TEST_FILES = Path(os.path.dirname(pydicom.__file__)) / "data" / "test_files"


def pydicom_data_dir() -> Path | None:
    try:
        import data_store  # the pydicom-data package
    except ImportError:
        return None
    return Path(os.path.dirname(data_store.__file__)) / "data"


def corpus_files() -> list[Path]:
    """Every file of pydicom's bundled test files and of pydicom-data."""
    roots = [PYDICOM_TEST_FILES]
    extra = pydicom_data_dir()
    if extra is not None:
        roots.append(extra)
    files: list[Path] = []
    for root in roots:
        for path in sorted(root.rglob("*")):
            if path.is_file() and path.suffix.lower() not in {
                ".py",
                ".pyc",
                ".json",
                ".txt",
                ".gz",
                ".bz2",
                ".zip",
                ".pdf",
            }:
                files.append(path)
    return files


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def dcmtk_tool(name: str) -> str:
    """Path of a dcmtk tool; skip (or fail in CI) when dcmtk is missing.

    pynetdicom installs Python apps of the same names (``storescu``...), so each
    candidate is checked to be dcmtk's own.
    """
    candidates = [
        f"/usr/bin/{name}",
        *(str(Path(p) / name) for p in os.environ.get("PATH", "").split(os.pathsep)),
    ]
    for cand in candidates:
        if os.access(cand, os.X_OK):
            try:
                out = subprocess.run(
                    [cand, "--version"], capture_output=True, text=True, timeout=10
                ).stdout
            except (OSError, subprocess.TimeoutExpired):
                continue
            if "dcmtk" in out.lower():
                return cand
    if REQUIRE_DCMTK:
        pytest.fail(f"dcmtk's {name} is required (SPACING_SCP_REQUIRE_DCMTK=1) but missing")
    pytest.skip(f"dcmtk's {name} is not installed")


def dcmtk_env() -> dict[str, str]:
    # Without it Debian's dcmtk stalls on Nagle's algorithm (performance-notes.md).
    return {**os.environ, "TCP_NODELAY": "1"}


def make_config(data_dir: Path, **sections: dict[str, Any]) -> Config:
    overrides: dict[str, Any] = {
        "storage.data_dir": str(data_dir),
        "node.port": 0,
        "node.host": "127.0.0.1",
        "storage.min_free_mb": 0,
        "http.port": 0,
        # In-process nodes index before they answer, so that a test reads the index right
        # after its C-STOREs; the journal and the indexer beside the receive path (the
        # default) are tested in test_indexer.py and by the `serve` processes.
        "node.indexer": "inline",
    }
    for section, values in sections.items():
        for key, value in values.items():
            overrides[f"{section}.{key}"] = value
    return load_config(None, environ={}, overrides=overrides)


@pytest.fixture
def node_factory(tmp_path: Path) -> Iterator[Callable[..., Any]]:
    from scp.node import Node

    nodes: list[Node] = []

    def make(cfg: Config | None = None, **sections: dict[str, Any]) -> Node:
        cfg = cfg or make_config(tmp_path / f"data{len(nodes)}", **sections)
        node = Node(cfg)
        node.start()
        nodes.append(node)
        return node

    yield make
    for node in nodes:
        node.stop(grace_s=2)


@pytest.fixture
def node(node_factory: Callable[..., Any]) -> Any:
    return node_factory()


@dataclass
class StoreResult:
    path: Path
    status: int | None
    comment: str | None = None


def send_files(
    port: int, paths: Sequence[Path], ae_title: str = "TESTSCU", called: str = "SPACING_SCP"
) -> list[StoreResult]:
    """Send Part 10 files with pynetdicom, dataset bytes exactly as in the files."""
    metas = []
    for p in paths:
        meta = dcmread(p, stop_before_pixels=True, force=True).file_meta
        metas.append((p, str(meta.MediaStorageSOPClassUID), str(meta.TransferSyntaxUID)))
    results: list[StoreResult] = []
    previous = _config.STORE_SEND_CHUNKED_DATASET
    _config.STORE_SEND_CHUNKED_DATASET = True
    try:
        # one association per batch of files (at most 128 presentation contexts each)
        batch: list[tuple[Path, str, str]] = []
        keys: set[tuple[str, str]] = set()

        def flush() -> None:
            if not batch:
                return
            ae = AE(ae_title=ae_title)
            ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 60
            for sop_class, ts in sorted({(c, t) for _, c, t in batch}):
                ae.add_requested_context(sop_class, ts)
            assoc = ae.associate("127.0.0.1", port, ae_title=called, max_pdu=0)
            assert assoc.is_established, "association not established"
            try:
                for path, _, _ in batch:
                    rsp = assoc.send_c_store(path)
                    results.append(
                        StoreResult(
                            path, getattr(rsp, "Status", None), getattr(rsp, "ErrorComment", None)
                        )
                    )
            finally:
                assoc.release()
            batch.clear()
            keys.clear()

        for item in metas:
            key = (item[1], item[2])
            if key not in keys and len(keys) >= 120:
                flush()
            keys.add(key)
            batch.append(item)
        flush()
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = previous
    return results


def dataset_bytes(path: Path) -> bytes:
    """The data set bytes of a Part 10 file (everything after the File Meta)."""
    from storage.part10 import _file_meta_end

    with open(path, "rb") as fp:
        offset = _file_meta_end(fp, path.stat().st_size)
        fp.seek(offset)
        return fp.read()


class NodeProcess:
    """A ``spacing-scp serve`` subprocess (for restarts, signals and memory)."""

    def __init__(
        self,
        data_dir: Path,
        port: int | None = None,
        config: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self.http_port = free_port()
        self.config = config
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir.parent / f"node-{self.port}.log"

    def start(self) -> NodeProcess:
        cmd = [
            sys.executable,
            "-m",
            "scp",
            "serve",
            "--port",
            str(self.port),
            "--host",
            "127.0.0.1",
            "--data-dir",
            str(self.data_dir),
            "--http-port",
            str(self.http_port),
        ]
        if self.config:
            cmd += ["--config", str(self.config)]
        env = {**os.environ, "SPACING_SCP_STORAGE_MIN_FREE_MB": "0", **(self.env or {})}
        self.log = open(self.log_path, "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"node exited: {self.log_path.read_text()}")
            if echo_ok(self.port):
                return self
            time.sleep(0.1)
        raise RuntimeError(f"node did not start: {self.log_path.read_text()}")

    def children(self) -> list[int]:
        """The node's other processes (indexer, extra receiving processes)."""
        from bench.run import children_of

        assert self.proc is not None
        return children_of(self.proc.pid)

    def stop(self, sig: int = 15, timeout: float = 30) -> int:
        """Signal the node; SIGKILL kills its other processes too (a crash of the machine,
        not of one process: otherwise they would stop in order, through their lifeline)."""
        assert self.proc is not None
        if sig == signal.SIGKILL:
            for pid in self.children():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        code = self.proc.wait(timeout=timeout)
        self.log.close()
        return code

    def rss_kb(self, field: str = "VmRSS") -> int:
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        raise KeyError(field)


def echo_ok(port: int) -> bool:
    from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

    ae = AE(ae_title="PROBE")
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.network_timeout = 2
    assoc = ae.associate("127.0.0.1", port, ae_title="SPACING_SCP")
    if not assoc.is_established:
        return False
    rsp = assoc.send_c_echo()
    assoc.release()
    return getattr(rsp, "Status", None) == 0


@pytest.fixture
def node_process(tmp_path: Path) -> Iterator[Callable[..., NodeProcess]]:
    started: list[NodeProcess] = []

    def make(**kwargs: Any) -> NodeProcess:
        np_ = NodeProcess(kwargs.pop("data_dir", tmp_path / "data"), **kwargs)
        started.append(np_)
        return np_.start()

    yield make
    for np_ in started:
        if np_.proc is not None and np_.proc.poll() is None:
            np_.proc.kill()
            np_.proc.wait()


def have(tool: str) -> bool:
    return shutil.which(tool) is not None


REQUIRE_POSTGRES = os.environ.get("SPACING_SCP_REQUIRE_POSTGRES") == "1"


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database on the server ``.ci/postgres.sh`` starts.

    Skips when no server is configured (``SPACING_SCP_TEST_POSTGRES_URL``), unless
    ``SPACING_SCP_REQUIRE_POSTGRES=1`` (CI), where it fails.
    """
    base = os.environ.get("SPACING_SCP_TEST_POSTGRES_URL")
    if not base:
        if REQUIRE_POSTGRES:
            pytest.fail("SPACING_SCP_TEST_POSTGRES_URL is required (run .ci/postgres.sh)")
        pytest.skip('no PostgreSQL server: eval "$(bash .ci/postgres.sh)" to test on one')
    import uuid

    import psycopg

    name = f"spacing_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = base.rsplit("/", 1)[0] + "/" + name
    yield url
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Run a test on both index backends."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'index.sqlite3'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def sessions(database_url: str) -> Iterator[sessionmaker[Session]]:
    """A session factory on a migrated index, on each backend (``database_url``)."""
    from storage.db import ensure_schema, make_engine, make_session_factory

    engine = make_engine(database_url)
    ensure_schema(engine)
    yield make_session_factory(engine)
    engine.dispose()


def metric_value(name: str, **labels: str) -> float:
    """The sample ``name`` with ``labels`` as ``/metrics`` serves it (0 when not counted)."""
    from prometheus_client.parser import text_string_to_metric_families

    from scp.metrics import METRICS

    for family in text_string_to_metric_families(METRICS.render()):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0
