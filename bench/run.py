"""``python -m bench.run``: the node against dcmtk's ``storescp``, same workloads, in turn.

For each workload and each run: dcmtk ``storescp`` receives it, then the node
(``python -m scp serve``, full pipeline), each as a fresh process with a fresh, empty
folder; dcmtk ``storescu`` sends (``TCP_NODELAY=1``), one process per sender, all started
together.  The time is from the first sender's start to the last sender's exit.  Each
run is verified (files stored == instances sent; for the node also rows in the index),
then its folder is deleted.  Medians over the runs give instances/s, MB/s and the ratio
node/dcmtk; peak RSS is ``VmHWM`` of the receiving process.  See ``bench/README.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import logging
import os
import platform
import re
import resource
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from bench.orthanc import OrthancReceiver, orthanc_binary
from bench.workloads import WORKLOAD_NAMES, Workload, ensure, specs

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CACHE = REPO_ROOT / "bench" / ".cache"
NODE_AE_TITLE = "SPACING_SCP"
MB = 1_000_000  # throughput unit (MB/s), as in performance-notes.md
MIB = 1024 * 1024  # memory unit (RSS)

#: Issue 7 targets: a minimum ratio node/dcmtk (instances/s), or a maximum peak RSS.
TARGETS: dict[str, dict[str, float]] = {
    "W1": {"min_ratio": 0.5},
    "W2": {"min_ratio": 0.3},
    # issue 14: the peak RSS of the node's whole process tree above its idle size
    "W3": {"max_node_peak_rss_mib": 150.0},
    "W4": {"min_ratio": 0.5},
}

RECEIVERS: tuple[str, ...] = ("dcmtk", "orthanc", "node", "pynetdicom", "pynetdicom-stock")
#: Receivers measured unless --receivers says otherwise.
DEFAULT_RECEIVERS = ("dcmtk", "node")
#: The bare pynetdicom receivers (bench/bare_receiver.py): the floor under the node.
BARE_RECEIVERS = ("pynetdicom", "pynetdicom-stock")
#: Above this share of the machine's CPU used by other processes, a run is called noisy.
NOISY_SHARE = 0.1


class BenchError(RuntimeError):
    """The benchmark cannot run (a tool is missing, a receiver does not start)."""


# -- helpers ----------------------------------------------------------------------------------
def say(message: str) -> None:
    print(message, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def dcmtk_path(name: str) -> str:
    """dcmtk's own tool (pynetdicom installs Python apps of the same names on PATH)."""
    candidates = [
        f"/usr/bin/{name}",
        *(str(Path(p) / name) for p in os.environ.get("PATH", "").split(os.pathsep) if p),
    ]
    for cand in candidates:
        if not os.access(cand, os.X_OK):
            continue
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            out = subprocess.run(
                [cand, "--version"], capture_output=True, text=True, timeout=10
            ).stdout
            if "dcmtk" in out.lower():
                return cand
    raise BenchError(f"dcmtk's {name} is not installed (apt-get install dcmtk)")


def dcmtk_env() -> dict[str, str]:
    # Debian's dcmtk sets TCP_NODELAY only with this variable (performance-notes.md).
    return {**os.environ, "TCP_NODELAY": "1"}


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process (all its threads) from /proc/PID/stat."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    # fields[0] is field 3 (state); utime and stime are fields 14 and 15
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_of(pid: int) -> list[int]:
    """Live child processes of ``pid`` (scanning /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:  # field 4: ppid
            found.append(int(entry.name))
    return found


def tree_cpu_seconds(pid: int) -> float | None:
    """:func:`cpu_seconds` of ``pid`` plus its live children (``[node] processes``)."""
    own = cpu_seconds(pid)
    if own is None:
        return None
    return own + sum(cpu_seconds(child) or 0.0 for child in children_of(pid))


def machine_busy_seconds() -> float:
    """CPU seconds all cores together spent busy since boot (/proc/stat)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def proc_status_kb(pid: int, field_name: str) -> int | None:
    """A ``kB`` field of /proc/PID/status (VmHWM: peak RSS; VmRSS: current)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    return None


def tree_kb(pid: int, field_name: str) -> int | None:
    """:func:`proc_status_kb` summed over ``pid`` and its live children (the node's indexer
    and extra receiving processes); ``None`` if ``pid`` is gone."""
    own = proc_status_kb(pid, field_name)
    if own is None:
        return None
    return own + sum(proc_status_kb(child, field_name) or 0 for child in children_of(pid))


def echo_ok(port: int, called: str) -> bool:
    """A C-ECHO with pynetdicom: the receiver is up and answering."""
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

    # refused connections while the receiver starts are expected: keep them off the output
    logging.getLogger("pynetdicom").setLevel(logging.CRITICAL)
    ae = AE(ae_title="BENCHPROBE")
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.network_timeout = ae.dimse_timeout = 5
    assoc = ae.associate("127.0.0.1", port, ae_title=called)
    if not assoc.is_established:
        return False
    rsp = assoc.send_c_echo()
    assoc.release()
    return getattr(rsp, "Status", None) == 0


def wait_ready(proc: subprocess.Popen[bytes], port: int, called: str, log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"receiver exited with {proc.returncode}: {tail(log)}")
        with contextlib.suppress(OSError):
            if echo_ok(port, called):
                return
        time.sleep(0.1)
    raise BenchError(f"receiver did not answer C-ECHO within 60 s: {tail(log)}")


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 60) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


def count_files(folder: Path, pattern: str = "*") -> int:
    return sum(1 for p in folder.rglob(pattern) if p.is_file())


def warm_page_cache(workload: Workload) -> None:
    """Read the workload once so that no receiver pays for cold reads of the sender."""
    for folder in workload.sender_dirs:
        for path in folder.iterdir():
            with open(path, "rb") as fh:
                while fh.read(8 * MIB):
                    pass


# -- receivers --------------------------------------------------------------------------------
class Receiver(Protocol):
    name: str
    called_ae_title: str

    def start(self, run_dir: Path) -> int: ...

    def pid(self) -> int: ...

    def alive(self) -> bool: ...

    def stop(self) -> int: ...

    def verify(self, expected: int) -> tuple[int, dict[str, Any]]: ...

    def describe(self) -> str: ...


class DcmtkReceiver:
    """``storescp PORT -od DIR``: the options of the reference figures (no ``+B``, no fsync)."""

    name = "dcmtk"
    called_ae_title = NODE_AE_TITLE  # storescp does not check the called AE title

    def __init__(self, storescp: str) -> None:
        self.storescp = storescp
        self.proc: subprocess.Popen[bytes] | None = None
        self.out_dir: Path | None = None
        self.log_file: Any = None

    def describe(self) -> str:
        return f"{self.storescp} -od DIR PORT (single process; files written without fsync)"

    def start(self, run_dir: Path) -> int:
        self.out_dir = run_dir / "received"
        self.out_dir.mkdir(parents=True)
        port = free_port()
        log = run_dir / "storescp.log"
        self.log_file = open(log, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [self.storescp, "-od", str(self.out_dir), str(port)],
            stdout=self.log_file,
            stderr=subprocess.STDOUT,
            env=dcmtk_env(),
        )
        wait_ready(self.proc, port, self.called_ae_title, log)
        return port

    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> int:
        assert self.proc is not None
        code = stop_process(self.proc)
        self.log_file.close()
        return code

    def verify(self, expected: int) -> tuple[int, dict[str, Any]]:
        assert self.out_dir is not None
        return count_files(self.out_dir), {}


class NodeReceiver:
    """``python -m scp serve``: the node as in production (validation, index, fsync)."""

    name = "node"
    called_ae_title = NODE_AE_TITLE

    def __init__(self, forward: bool, processes: int = 1, live: Sequence[Receiver] = ()) -> None:
        self.forward = forward
        self.processes = processes
        #: Live forwarding destinations (``--live-destinations``): started with the node,
        #: checked to have received every instance, stopped with it.
        self.live = list(live)
        self.proc: subprocess.Popen[bytes] | None = None
        self.data_dir: Path | None = None
        self.log_path: Path | None = None
        self.log_file: Any = None
        self.start_rss_kb: int | None = None
        self.http_port = 0

    def describe(self) -> str:
        extra = (
            " --config (one [[destinations]] entry: a dead port, first retry after 1 day)"
            if self.forward
            else ""
        )
        if self.processes > 1:
            extra += f" ([node] processes = {self.processes})"
        return f"{sys.executable} -m scp serve --port P --http-port Q --data-dir D{extra}"

    def start(self, run_dir: Path) -> int:
        self.data_dir = run_dir / "data"
        port, http_port = free_port(), free_port()
        self.http_port = http_port
        cmd = [
            sys.executable,
            "-m",
            "scp",
            "serve",
            "--port",
            str(port),
            "--host",
            "127.0.0.1",
            "--http-port",
            str(http_port),
            "--data-dir",
            str(self.data_dir),
        ]
        toml = f"[node]\nprocesses = {self.processes}\n\n"
        for dest in self.live:
            dest_port = dest.start(run_dir / f"dest-{dest.name}")
            toml += (
                "[[destinations]]\n"
                f'name = "bench-{dest.name}"\n'
                f'ae_title = "{dest.called_ae_title}"\n'
                'host = "127.0.0.1"\n'
                f"port = {dest_port}\n"
                "retry_initial_s = 1.0\n\n"
            )
        if self.forward and not self.live:
            # A destination nobody listens on, retried only after a day: every stored instance
            # is queued (once forwarding exists) but the sender never competes for the CPU.
            toml += (
                "[[destinations]]\n"
                'name = "bench-dead-peer"\n'
                'ae_title = "DEADPEER"\n'
                'host = "127.0.0.1"\n'
                f"port = {free_port()}\n"
                "max_attempts = 20\n"
                "retry_initial_s = 86400.0\n"
                "retry_max_s = 86400.0\n"
            )
        config = run_dir / "bench-node.toml"
        config.write_text(toml)
        cmd += ["--config", str(config)]
        self.log_path = run_dir / "node.log"
        self.log_file = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        pythonpath = [str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(pythonpath)}
        self.proc = subprocess.Popen(
            cmd, stdout=self.log_file, stderr=subprocess.STDOUT, env=env, cwd=REPO_ROOT
        )
        wait_ready(self.proc, port, self.called_ae_title, self.log_path)
        # With several processes, send only once every one of them listens: the kernel
        # spreads associations over the listeners present when each one connects.
        deadline = time.monotonic() + 60
        while self.log_path.read_text(errors="replace").count("listening on") < self.processes:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise BenchError(
                    f"not all {self.processes} node processes listen: {tail(self.log_path)}"
                )
            time.sleep(0.05)
        # The indexer process starts beside the listener; its start-up (imports) is not
        # part of receiving: send once it runs.
        if os.environ.get("SPACING_SCP_NODE_INDEXER", "process") == "process":
            while "indexer running" not in self.log_path.read_text(errors="replace"):
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise BenchError(f"the indexer process did not start: {tail(self.log_path)}")
                time.sleep(0.05)
        self.start_rss_kb = proc_status_kb(self.proc.pid, "VmRSS")
        return port

    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> int:
        assert self.proc is not None
        code = stop_process(self.proc)
        self.log_file.close()
        for dest in self.live:
            dest.stop()
        return code

    def index_lag(self, expected: int, timeout_s: float = 30.0) -> dict[str, Any]:
        """:func:`index_lag` once the node observed ``expected`` instances (not timed)."""
        deadline = time.monotonic() + timeout_s
        while True:
            lag = index_lag(self.http_port)
            if lag.get("index_lag_count", 0) >= expected or time.monotonic() > deadline:
                return lag
            time.sleep(0.1)

    def forwarded(self, expected: int, timeout_s: float = 300.0) -> dict[str, int]:
        """Instances each live destination holds, once all have ``expected`` (or at the
        timeout): forwarding goes on after the senders exit and is not timed."""
        deadline = time.monotonic() + timeout_s
        while True:
            got = {d.name: d.verify(expected)[0] for d in self.live}
            if all(n >= expected for n in got.values()) or time.monotonic() > deadline:
                return got
            time.sleep(0.2)

    def verify(self, expected: int) -> tuple[int, dict[str, Any]]:
        assert self.data_dir is not None and self.log_path is not None
        files = count_files(self.data_dir / "instances", "*.dcm")
        extra: dict[str, Any] = {
            "idle_rss_mib": round(self.start_rss_kb / 1024, 1) if self.start_rss_kb else None
        }
        # The node answers once the file and its journal record are durable; its indexer
        # (beside the receive path) makes them visible shortly after: wait for it, and
        # report how long after the last sender's exit the index had every instance.
        started = time.monotonic()
        facts = index_facts(self.data_dir / "index.sqlite3")
        while facts.get("index_instances", 0) < expected and time.monotonic() - started < 30:
            time.sleep(0.01)
            facts = index_facts(self.data_dir / "index.sqlite3")
        extra["index_settle_s"] = round(time.monotonic() - started, 3)
        extra.update(facts)
        extra.update(log_problems(self.log_path))
        return files, extra


class BareReceiver:
    """``python -m bench.bare_receiver``: pynetdicom receiving to disk with fsync, no node
    work at all; ``pynetdicom`` with the node's event-driven reactors, ``pynetdicom-stock``
    with pynetdicom's own."""

    called_ae_title = NODE_AE_TITLE

    def __init__(self, name: str) -> None:
        self.name = name
        self.reactor = "event" if name == "pynetdicom" else "polling"
        self.proc: subprocess.Popen[bytes] | None = None
        self.out_dir: Path | None = None
        self.log_file: Any = None

    def describe(self) -> str:
        return (
            f"{sys.executable} -m bench.bare_receiver --port P --out D --reactor {self.reactor}"
            " (chunked receive, fsync + rename, nothing else)"
        )

    def start(self, run_dir: Path) -> int:
        self.out_dir = run_dir / "received"
        port = free_port()
        log = run_dir / "bare.log"
        self.log_file = open(log, "wb")  # noqa: SIM115 - closed in stop()
        pythonpath = [str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(pythonpath)}
        cmd = [sys.executable, "-m", "bench.bare_receiver", "--port", str(port)]
        cmd += ["--out", str(self.out_dir), "--reactor", self.reactor]
        self.proc = subprocess.Popen(
            cmd, stdout=self.log_file, stderr=subprocess.STDOUT, env=env, cwd=REPO_ROOT
        )
        wait_ready(self.proc, port, self.called_ae_title, log)
        return port

    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> int:
        assert self.proc is not None
        code = stop_process(self.proc)
        self.log_file.close()
        return code

    def verify(self, expected: int) -> tuple[int, dict[str, Any]]:
        assert self.out_dir is not None
        return count_files(self.out_dir, "*.dcm"), {}


def index_lag(http_port: int) -> dict[str, Any]:
    """The node's Success-to-indexed times from its ``/metrics`` histogram
    (``spacing_scp_index_lag_seconds``, one observation per instance): count, and the
    99th percentile as the upper bound of the bucket it falls in, in ms."""
    from prometheus_client.parser import text_string_to_metric_families

    url = f"http://127.0.0.1:{http_port}/metrics"
    try:
        with urllib.request.urlopen(url, timeout=10) as rsp:
            text = rsp.read().decode()
    except OSError as exc:
        return {"index_lag_error": str(exc)}
    buckets: list[tuple[float, float]] = []
    for family in text_string_to_metric_families(text):
        if family.name == "spacing_scp_index_lag_seconds":
            buckets = sorted(
                (float(s.labels["le"]), s.value)
                for s in family.samples
                if s.name.endswith("_bucket")
            )
    count = buckets[-1][1] if buckets else 0.0
    if not count:
        return {"index_lag_count": 0, "index_lag_p99_ms": None}
    p99 = next(bound for bound, n in buckets if n >= 0.99 * count)
    return {"index_lag_count": int(count), "index_lag_p99_ms": round(p99 * 1000, 1)}


def index_facts(db: Path) -> dict[str, Any]:
    """Rows in the index, their statuses, and any forward-queue-like table's row count."""
    facts: dict[str, Any] = {}
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        return {"index_error": str(exc)}
    try:
        facts["index_instances"] = con.execute("SELECT COUNT(*) FROM instances").fetchone()[0]
        facts["statuses"] = {
            f"0x{code:04X}": n
            for code, n in con.execute("SELECT status, COUNT(*) FROM instances GROUP BY status")
        }
        tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        queue = {
            t: con.execute(f'SELECT COUNT(*) FROM "{t}"').fetchone()[0]
            for t in tables
            if re.search(r"forward|queue|outbox|job|deliver", t, re.IGNORECASE)
        }
        facts["forward_queue_rows"] = queue or None
    except sqlite3.Error as exc:
        facts["index_error"] = str(exc)
    finally:
        con.close()
    return facts


_PROBLEM = re.compile(r" (WARNING|ERROR|CRITICAL) |Traceback")
#: What the node logs, as it should, about the dead forwarding destination.
_EXPECTED = re.compile(
    r"bench-dead-peer|DEADPEER|pynetdicom\.transport: (Association request failed: unable to "
    r"connect|TCP Initialisation Error: \[Errno 111\])"
)


def log_problems(log: Path) -> dict[str, Any]:
    """Warnings, errors and tracebacks in the node's log (the dead peer's excepted)."""
    lines = [
        line
        for line in log.read_text(errors="replace").splitlines()
        if _PROBLEM.search(line) and not _EXPECTED.search(line)
    ]
    return {"log_problem_lines": len(lines), "log_problem_sample": lines[:5]}


# -- one measurement --------------------------------------------------------------------------
@dataclass
class RunResult:
    workload: str
    receiver: str
    run: int
    instances: int
    bytes: int
    seconds: float
    instances_per_s: float
    mb_per_s: float
    peak_rss_mib: float | None
    stored: int
    ok: bool
    cpu_seconds: float | None = None
    cpu_ms_per_instance: float | None = None
    problems: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


def send(
    storescu: str, workload: Workload, port: int, called: str, run_dir: Path
) -> tuple[float, list[int], list[str], float]:
    """All senders at once: seconds from the first start to the last exit, exit codes,
    log tails, and the CPU seconds the senders and the harness used meanwhile."""
    procs: list[subprocess.Popen[bytes]] = []
    logs = []
    rusage_before = _own_and_children_cpu()
    started = time.perf_counter()
    try:
        for i, folder in enumerate(workload.sender_dirs):
            log = open(run_dir / f"storescu{i}.log", "wb")  # noqa: SIM115 - closed below
            logs.append(log)
            procs.append(
                subprocess.Popen(
                    [
                        storescu,
                        "-xe",  # propose explicit VR little endian first (the files' syntax)
                        "-nh",  # do not stop at a failed C-STORE: count what was stored
                        "+sd",
                        "-aet",
                        f"BENCH{i}",
                        "-aec",
                        called,
                        "127.0.0.1",
                        str(port),
                        str(folder),
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=dcmtk_env(),
                )
            )
        codes = [p.wait(timeout=3600) for p in procs]
        seconds = time.perf_counter() - started
        sender_cpu = _own_and_children_cpu() - rusage_before
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        for log in logs:
            log.close()
    tails = [tail(run_dir / f"storescu{i}.log", 5) for i in range(len(procs))]
    return seconds, codes, tails, sender_cpu


def _own_and_children_cpu() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)  # waited-for senders
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def measure(
    receiver: Receiver,
    storescu: str,
    workload: Workload,
    run: int,
    work_dir: Path,
    keep: bool,
) -> RunResult:
    run_dir = Path(
        tempfile.mkdtemp(prefix=f"{workload.spec.name}-{receiver.name}-{run}-", dir=work_dir)
    )
    problems: list[str] = []
    try:
        try:
            port = receiver.start(run_dir)
        except BenchError as exc:
            with contextlib.suppress(Exception):
                receiver.stop()
            return RunResult(
                workload=workload.spec.name,
                receiver=receiver.name,
                run=run,
                instances=workload.instances,
                bytes=workload.total_bytes,
                seconds=0.0,
                instances_per_s=0.0,
                mb_per_s=0.0,
                peak_rss_mib=None,
                stored=0,
                ok=False,
                problems=[f"{receiver.name} did not start: {exc}"],
            )
        os.sync()  # earlier runs' writeback must not land in this measurement
        try:
            busy_before = machine_busy_seconds()
            cpu_before = tree_cpu_seconds(receiver.pid())
            idle_tree_kb = tree_kb(receiver.pid(), "VmRSS")
            seconds, codes, sender_tails, sender_cpu = send(
                storescu, workload, port, receiver.called_ae_title, run_dir
            )
            cpu_after = tree_cpu_seconds(receiver.pid())
            busy = machine_busy_seconds() - busy_before
            peak_kb = proc_status_kb(receiver.pid(), "VmHWM")
            # every process's own peak, summed: at least the tree's peak at any one moment
            peak_tree_kb = tree_kb(receiver.pid(), "VmHWM")
            alive = receiver.alive()
            forwarded = (
                receiver.forwarded(workload.instances)
                if isinstance(receiver, NodeReceiver) and receiver.live
                else None
            )
            lag = (
                receiver.index_lag(workload.instances) if isinstance(receiver, NodeReceiver) else {}
            )
        finally:
            exit_code = receiver.stop()
        if not alive:
            problems.append(f"{receiver.name} died during the run (exit {exit_code})")
        for i, code in enumerate(codes):
            if code != 0:
                problems.append(f"storescu #{i} exited with {code}: {sender_tails[i]}")
        stored, extra = receiver.verify(workload.instances)
        extra.update(lag)
        if idle_tree_kb is not None and peak_tree_kb is not None:
            extra["tree_peak_above_idle_mib"] = round((peak_tree_kb - idle_tree_kb) / 1024, 1)
        cpu = None
        if cpu_before is not None and cpu_after is not None:
            cpu = round(cpu_after - cpu_before, 2)
        # CPU used during the run by everything but the receiver, the senders and the harness
        # (other jobs on the same cores): a high share means the figures are noisy.
        foreign = busy - (cpu or 0.0) - sender_cpu
        extra["foreign_cpu_share"] = round(max(0.0, foreign) / (seconds * (os.cpu_count() or 1)), 3)
        if stored != workload.instances:
            problems.append(f"{stored} files stored of {workload.instances} sent")
        indexed = extra.get("index_instances")
        if indexed is not None and indexed != workload.instances:
            problems.append(f"{indexed} instances indexed of {workload.instances} sent")
        if "index_error" in extra:
            problems.append(f"index: {extra['index_error']}")
        if forwarded is not None:
            extra["forwarded"] = forwarded
            for dest, n in forwarded.items():
                if n != workload.instances:
                    problems.append(f"destination {dest} received {n} of {workload.instances}")
        if keep:
            extra["kept"] = str(run_dir)
        return RunResult(
            workload=workload.spec.name,
            receiver=receiver.name,
            run=run,
            instances=workload.instances,
            bytes=workload.total_bytes,
            seconds=round(seconds, 4),
            instances_per_s=round(workload.instances / seconds, 2),
            mb_per_s=round(workload.total_bytes / MB / seconds, 2),
            peak_rss_mib=round(peak_kb / 1024, 1) if peak_kb else None,
            cpu_seconds=cpu,
            cpu_ms_per_instance=None if cpu is None else round(cpu * 1000 / workload.instances, 2),
            stored=stored,
            ok=not problems,
            problems=problems,
            extra=extra,
        )
    finally:
        if not keep:
            shutil.rmtree(run_dir, ignore_errors=True)
            os.sync()


# -- summary ----------------------------------------------------------------------------------
def median_or_none(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return round(statistics.median(present), 2) if present else None


def summarize(name: str, workload: Workload, runs: list[RunResult]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "description": workload.spec.description,
        "instances": workload.instances,
        "senders": workload.spec.senders,
        "bytes": workload.total_bytes,
        "mb": round(workload.total_bytes / MB, 1),
    }
    for rcv in RECEIVERS:
        mine = [r for r in runs if r.receiver == rcv and r.ok]
        if not mine:
            continue
        rss = [r.peak_rss_mib for r in mine if r.peak_rss_mib is not None]
        out[rcv] = {
            "runs_ok": len(mine),
            "max_foreign_cpu_share": max(
                (r.extra.get("foreign_cpu_share") or 0.0 for r in mine), default=None
            ),
            "seconds": median_or_none([r.seconds for r in mine]),
            "instances_per_s": median_or_none([r.instances_per_s for r in mine]),
            "mb_per_s": median_or_none([r.mb_per_s for r in mine]),
            "peak_rss_mib": max(rss) if rss else None,
            "cpu_ms_per_instance": median_or_none([r.cpu_ms_per_instance for r in mine]),
        }
        if rcv == "node":
            idle = [r.extra.get("idle_rss_mib") for r in mine]
            out[rcv]["idle_rss_mib"] = median_or_none(idle)
            above = [r.extra.get("tree_peak_above_idle_mib") for r in mine]
            out[rcv]["tree_peak_above_idle_mib"] = max(
                (x for x in above if x is not None), default=None
            )
            lags = [r.extra.get("index_lag_p99_ms") for r in mine]
            out[rcv]["index_lag_p99_ms"] = max((x for x in lags if x is not None), default=None)
    dcmtk, node = out.get("dcmtk"), out.get("node")
    ratio = None
    if dcmtk and node and dcmtk["instances_per_s"]:
        ratio = round(node["instances_per_s"] / dcmtk["instances_per_s"], 3)
    out["ratio"] = ratio
    # the anchors of issue 14: Orthanc (the same job in C++) and the bare receiver
    for peer in ("orthanc", "pynetdicom"):
        theirs = out.get(peer)
        if node and theirs and theirs["instances_per_s"]:
            out[f"node_per_{peer}"] = round(node["instances_per_s"] / theirs["instances_per_s"], 3)
    for bare in BARE_RECEIVERS:
        if dcmtk and out.get(bare) and dcmtk["instances_per_s"]:
            out[bare]["ratio"] = round(out[bare]["instances_per_s"] / dcmtk["instances_per_s"], 3)
    target = TARGETS[name]
    out["target"] = target
    met: bool | None = None
    if "min_ratio" in target and ratio is not None:
        met = ratio >= target["min_ratio"]
    elif "max_node_peak_rss_mib" in target and node:
        peak = node.get("tree_peak_above_idle_mib")
        if peak is None:
            peak = node["peak_rss_mib"]
        if peak is not None:
            met = peak < target["max_node_peak_rss_mib"]
    out["meets_target"] = met
    out["failed_runs"] = [
        {"receiver": r.receiver, "run": r.run, "problems": r.problems} for r in runs if not r.ok
    ]
    return out


def fmt(value: Any, digits: int = 0) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def table(summary: dict[str, dict[str, Any]]) -> str:
    head = [
        "workload",
        "inst",
        "MB",
        "dcmtk s",
        "dcmtk inst/s",
        "dcmtk MB/s",
        "dcmtk RSS MiB",
        "node s",
        "node inst/s",
        "node MB/s",
        "node RSS MiB",
        "tree +MiB",
        "node CPU ms/inst",
        "lag p99 ms",
        "ratio",
        "target",
    ]
    rows = []
    for name, s in summary.items():
        d, n = s.get("dcmtk") or {}, s.get("node") or {}
        t = s["target"]
        target = (
            f"ratio >= {t['min_ratio']}"
            if "min_ratio" in t
            else f"tree RSS +{t['max_node_peak_rss_mib']:.0f}"
        )
        mark = {True: " ok", False: " MISS", None: ""}[s["meets_target"]]
        rows.append(
            [
                name,
                fmt(s["instances"]),
                fmt(s["mb"], 1),
                fmt(d.get("seconds"), 2),
                fmt(d.get("instances_per_s"), 1),
                fmt(d.get("mb_per_s"), 1),
                fmt(d.get("peak_rss_mib"), 0),
                fmt(n.get("seconds"), 2),
                fmt(n.get("instances_per_s"), 1),
                fmt(n.get("mb_per_s"), 1),
                fmt(n.get("peak_rss_mib"), 0),
                fmt(n.get("tree_peak_above_idle_mib"), 0),
                fmt(n.get("cpu_ms_per_instance"), 1),
                fmt(n.get("index_lag_p99_ms"), 0),
                fmt(s["ratio"], 3),
                target + mark,
            ]
        )
    for bare in BARE_RECEIVERS:
        if any(s.get(bare) for s in summary.values()):
            head += [f"{bare} inst/s", f"{bare} ratio"]
            for row, s in zip(rows, summary.values(), strict=True):
                b = s.get(bare) or {}
                row += [fmt(b.get("instances_per_s"), 1), fmt(b.get("ratio"), 3)]
    if any(s.get("orthanc") for s in summary.values()):
        head += ["orthanc inst/s", "node/orthanc"]
        for row, s in zip(rows, summary.values(), strict=True):
            o = s.get("orthanc") or {}
            row += [fmt(o.get("instances_per_s"), 1), fmt(s.get("node_per_orthanc"), 3)]
    if any(s.get("node_per_pynetdicom") for s in summary.values()):
        head += ["node/pynetdicom"]
        for row, s in zip(rows, summary.values(), strict=True):
            row += [fmt(s.get("node_per_pynetdicom"), 3)]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(head, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(lines)


def _live_destinations(storescp: str) -> list[Receiver]:
    """dcmtk ``storescp`` and, when installed, Orthanc, as the node's destinations."""
    orthanc = orthanc_binary()
    if orthanc is None:
        raise BenchError("--live-destinations: orthanc is not installed (apt-get install orthanc)")
    return [DcmtkReceiver(storescp), OrthancReceiver(orthanc)]


# -- machine ----------------------------------------------------------------------------------
def machine_info(storescp: str) -> dict[str, Any]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_kb = proc_meminfo_kb("MemTotal")
    dcmtk = subprocess.run([storescp, "--version"], capture_output=True, text=True).stdout
    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=REPO_ROOT
    ).stdout.strip()

    def version(pkg: str) -> str | None:
        try:
            return importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            return None

    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "hostname": platform.node(),
        "nproc": os.cpu_count(),
        "cpu_model": cpu,
        "memory_mib": round(mem_kb / 1024) if mem_kb else None,
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "python_executable": sys.executable,
        "pynetdicom": version("pynetdicom"),
        "pydicom": version("pydicom"),
        "sqlalchemy": version("SQLAlchemy"),
        "dcmtk": dcmtk.strip().splitlines()[0] if dcmtk.strip() else None,
        "git_commit": commit or None,
    }


def proc_meminfo_kb(field_name: str) -> int | None:
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    return None


def filesystem_of(path: Path) -> str:
    """Mount point and type of the filesystem holding ``path`` (fsync cost depends on it)."""
    best, fstype = "", "unknown"
    resolved = str(path.resolve())
    with contextlib.suppress(OSError):
        for line in Path("/proc/mounts").read_text().splitlines():
            parts = line.split()
            if len(parts) < 3 or len(parts[1]) < len(best):
                continue
            if resolved == parts[1] or resolved.startswith(parts[1].rstrip("/") + "/"):
                best, fstype = parts[1], f"{parts[0]} {parts[2]}"
    return f"{best} ({fstype})"


# -- main -------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench.run",
        description="Benchmark the node against dcmtk storescp (issue 7). See bench/README.md.",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="small workloads for CI (W1 40 slices, W2 300, W3 100 MiB, W4 4x20)",
    )
    p.add_argument("--runs", type=int, default=3, help="runs per workload and receiver (median)")
    p.add_argument(
        "--workloads",
        default=",".join(WORKLOAD_NAMES),
        help="comma-separated subset of W1,W2,W3,W4 (default: all)",
    )
    p.add_argument(
        "--receivers",
        default=",".join(DEFAULT_RECEIVERS),
        help=f"any of {','.join(RECEIVERS)} (default dcmtk,node; the ratio column needs"
        " dcmtk, node/orthanc and node/pynetdicom their receivers). pynetdicom*:"
        " bench/bare_receiver.py, the floor under the node; orthanc: Orthanc (apt-get install"
        " orthanc), the peer a site would pick instead (issue 14)",
    )
    p.add_argument("--json", type=Path, help="also write the results to this JSON file")
    p.add_argument("--keep", action="store_true", help="keep received files and logs")
    p.add_argument(
        "--cache-dir", type=Path, default=DEFAULT_CACHE, help="generated workloads (reused)"
    )
    p.add_argument(
        "--work-dir",
        type=Path,
        default=None,
        help="where receivers store (default: a temporary folder; deleted after each run)",
    )
    p.add_argument(
        "--no-forward",
        dest="forward",
        action="store_false",
        help="run the node without its [[destinations]] entry (no forward queue)",
    )
    p.add_argument(
        "--live-destinations",
        action="store_true",
        help="forward to two live destinations (dcmtk storescp and Orthanc) and check that "
        "both received every instance (issue 14)",
    )
    p.add_argument(
        "--node-processes",
        type=_processes,
        default=1,
        metavar="N",
        help="run the node with [node] processes = N (default 1, the production default); "
        '"auto": one per core, the indexer counted, as the node resolves it',
    )
    return p


def _processes(text: str) -> int:
    """``--node-processes``: a number, or ``auto`` resolved as the node does
    (:attr:`scp.config_tables.NodeConfig.receiving_processes` on a fixed port)."""
    from scp.config_tables import NodeConfig

    if text.strip().lower() == "auto":
        return NodeConfig(processes="auto").receiving_processes
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: a number or auto") from None


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    names = [w.strip().upper() for w in args.workloads.split(",") if w.strip()]
    unknown = sorted(set(names) - set(WORKLOAD_NAMES))
    if unknown or not names:
        print(f"bench: unknown workload(s) {unknown}; use {','.join(WORKLOAD_NAMES)}")
        return 2
    receivers = [r.strip() for r in args.receivers.split(",") if r.strip()]
    if not receivers or set(receivers) - set(RECEIVERS):
        print(f"bench: --receivers takes {','.join(RECEIVERS)}")
        return 2
    if args.runs < 1:
        print("bench: --runs must be at least 1")
        return 2
    if not 1 <= args.node_processes <= 64:
        print("bench: --node-processes takes 1 to 64")
        return 2
    try:
        return run(args, names, receivers)
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2


def run(args: argparse.Namespace, names: list[str], receivers: list[str]) -> int:
    storescp, storescu = dcmtk_path("storescp"), dcmtk_path("storescu")
    began = time.monotonic()
    all_specs = specs(args.quick)
    cache_dir: Path = args.cache_dir.resolve()
    cache_dir.mkdir(parents=True, exist_ok=True)
    workloads = {n: ensure(all_specs[n], cache_dir, say) for n in names}

    work_parent = args.work_dir or Path(tempfile.gettempdir())
    work_parent.mkdir(parents=True, exist_ok=True)
    work_dir = Path(tempfile.mkdtemp(prefix="spacing-bench-", dir=work_parent))
    available: dict[str, Receiver] = {
        "dcmtk": DcmtkReceiver(storescp),
        "node": NodeReceiver(
            forward=args.forward,
            processes=args.node_processes,
            live=_live_destinations(storescp) if args.live_destinations else (),
        ),
        **{name: BareReceiver(name) for name in BARE_RECEIVERS},
    }
    orthanc = orthanc_binary()
    if orthanc is not None:
        available["orthanc"] = OrthancReceiver(orthanc)
    elif "orthanc" in receivers:
        raise BenchError("orthanc: not installed (apt-get install -y orthanc)")
    chosen = [available[r] for r in RECEIVERS if r in receivers]
    info = machine_info(storescp)
    say(
        f"bench: {info['cpu_model']} x{info['nproc']}, python {info['python']}, "
        f"pynetdicom {info['pynetdicom']}, {info['dcmtk']}; work dir {work_dir} "
        f"on {filesystem_of(work_dir)}"
    )
    results: list[RunResult] = []
    summary: dict[str, dict[str, Any]] = {}
    try:
        for name in names:
            workload = workloads[name]
            warm_page_cache(workload)
            for run_no in range(1, args.runs + 1):
                for receiver in chosen:
                    r = measure(receiver, storescu, workload, run_no, work_dir, args.keep)
                    results.append(r)
                    rss = fmt(r.peak_rss_mib, 0)
                    state = "ok" if r.ok else "FAILED: " + "; ".join(r.problems)
                    other = r.extra.get("foreign_cpu_share")
                    say(
                        f"  {name} run {run_no} {r.receiver:5s} {r.seconds:8.2f} s "
                        f"{r.instances_per_s:8.1f} inst/s {r.mb_per_s:7.1f} MB/s "
                        f"peak RSS {rss:>5s} MiB  CPU {fmt(r.cpu_seconds, 2):>6s} s  "
                        f"other load {fmt(None if other is None else other * 100, 0):>3s}%  "
                        f"{state}"
                    )
            summary[name] = summarize(name, workload, [r for r in results if r.workload == name])
    finally:
        if not args.keep:
            shutil.rmtree(work_dir, ignore_errors=True)

    say("")
    say(table(summary))
    failed = [r for r in results if not r.ok]
    report = {
        "machine": info,
        "settings": {
            "quick": args.quick,
            "runs": args.runs,
            "workloads": names,
            "receivers": [r.name for r in chosen],
            "dcmtk_receiver": available["dcmtk"].describe(),
            "node_receiver": available["node"].describe(),
            "forward_destination": args.forward,
            "sender": f"{storescu} -xe -nh +sd -aet BENCHn -aec {NODE_AE_TITLE} HOST PORT DIR"
            " (TCP_NODELAY=1), one process per sender",
            "work_dir_filesystem": filesystem_of(work_parent),
            "units": "MB = 10^6 bytes (throughput); MiB = 2^20 bytes (RSS)",
        },
        "summary": summary,
        "runs": [asdict(r) for r in results],
        "failed_runs": len(failed),
        "wall_seconds": round(time.monotonic() - began, 1),
    }
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        say(f"\nJSON written to {args.json}")
    say(f"wall time {report['wall_seconds']} s")
    busy = [r.extra.get("foreign_cpu_share") or 0.0 for r in results]
    if busy and max(busy) > NOISY_SHARE:
        say(
            f"note: other processes used up to {max(busy):.0%} of the CPU during a run; "
            "figures are noisy (see 'other load')"
        )
    if failed:
        say(f"{len(failed)} run(s) FAILED verification (see above)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
