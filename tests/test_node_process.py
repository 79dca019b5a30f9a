"""The node as a process: restart keeps the index, SIGTERM stops cleanly, memory is flat."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from scp import status
from tests.conftest import send_files
from tests.dicom_factory import new_uid, write_ct, write_large_multiframe


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "scp", *args], capture_output=True, text=True, timeout=60
    )


def test_restart_keeps_instances_and_sigterm_exits_zero(node_process: Any, tmp_path: Path) -> None:
    data = tmp_path / "data"
    node = node_process(data_dir=data)
    study, series = new_uid(), new_uid()
    files = [write_ct(tmp_path / f"{i}.dcm", study=study, series=series) for i in range(5)]
    assert all(r.status == status.SUCCESS for r in send_files(node.port, files))
    assert node.stop(signal.SIGTERM) == 0
    assert "stopped" in node.log_path.read_text()

    again = node_process(data_dir=data, port=node.port)
    out = _cli("instances", "--json", "--data-dir", str(data))
    assert out.returncode == 0, out.stderr
    assert len(json.loads(out.stdout)) == 5
    out = _cli("series", "--data-dir", str(data))
    assert series in out.stdout
    out = _cli("studies", "--json", "--data-dir", str(data))
    assert json.loads(out.stdout)[0]["instance_count"] == 5
    assert again.stop(signal.SIGINT) == 0


def test_large_multiframe_memory_stays_flat_and_sigterm_waits(
    node_process: Any, tmp_path: Path
) -> None:
    """A >= 300 MB multi-frame instance: peak RSS of the node stays < 150 MB above idle.

    SIGTERM arrives while the instance is being received: the association finishes,
    the instance is stored, and the node exits 0.
    """
    src = write_large_multiframe(tmp_path / "big.dcm", megabytes=320)
    assert src.stat().st_size >= 300 * 1024 * 1024
    node = node_process(data_dir=tmp_path / "data")
    time.sleep(0.5)
    idle_kb = node.rss_kb("VmRSS")
    result: dict[str, Any] = {}

    def send() -> None:
        result["r"] = send_files(node.port, [src])

    t = threading.Thread(target=send)
    t.start()
    deadline = time.monotonic() + 30
    while "association accepted" not in node.log_path.read_text():
        assert time.monotonic() < deadline, "the association never started"
        time.sleep(0.05)
    time.sleep(0.2)
    assert node.proc is not None
    node.proc.send_signal(signal.SIGTERM)
    t.join(300)
    peak_kb = node.rss_kb("VmHWM") if node.proc.poll() is None else None
    code = node.stop(signal.SIGTERM, timeout=120)
    assert code == 0
    [res] = result["r"]
    assert res.status == status.SUCCESS
    log = node.log_path.read_text()
    assert "status=0x0000" in log
    if peak_kb is not None:
        assert (peak_kb - idle_kb) < 150 * 1024, (idle_kb, peak_kb)
    stored = list((tmp_path / "data" / "instances").rglob("*.dcm"))
    assert len(stored) == 1 and stored[0].stat().st_size >= src.stat().st_size


def test_large_multiframe_peak_rss(node_process: Any, tmp_path: Path) -> None:
    src = write_large_multiframe(tmp_path / "big.dcm", megabytes=300)
    node = node_process(data_dir=tmp_path / "data")
    time.sleep(0.5)
    idle_kb = node.rss_kb("VmRSS")
    [res] = send_files(node.port, [src])
    assert res.status == status.SUCCESS
    peak_kb = node.rss_kb("VmHWM")
    assert (peak_kb - idle_kb) < 150 * 1024, f"idle {idle_kb} kB, peak {peak_kb} kB"
    assert node.stop() == 0


def test_swap_rewrite_of_a_large_instance_keeps_memory_flat(
    node_process: Any, tmp_path: Path
) -> None:
    """Issue 3 item 8: applying edits streams the pixel data (new header + copied bytes)."""
    config = tmp_path / "swap.toml"
    config.write_text(
        '[[swap_rules]]\nname = "ACME writes column spacing first"\n'
        '[swap_rules.match]\nManufacturer = "ACME"\n'
    )
    src = write_large_multiframe(tmp_path / "big.dcm", megabytes=300, pixel_spacing="0.7\\0.5")
    node = node_process(data_dir=tmp_path / "data", config=config)
    time.sleep(0.5)
    idle_kb = node.rss_kb("VmRSS")
    [res] = send_files(node.port, [src])
    assert res.status == status.WARNING_COERCION_OF_DATA_ELEMENTS
    peak_kb = node.rss_kb("VmHWM")
    assert (peak_kb - idle_kb) < 150 * 1024, f"idle {idle_kb} kB, peak {peak_kb} kB"
    assert node.stop() == 0
    [stored] = list((tmp_path / "data" / "instances").rglob("*.dcm"))
    [original] = list((tmp_path / "data" / "originals").rglob("*.dcm"))
    assert stored.stat().st_size > 300 * 1024 * 1024
    assert original.stat().st_size > 300 * 1024 * 1024


def test_several_processes_share_the_port(node_process: Any, tmp_path: Path) -> None:
    """[node] processes = 2: two receivers on one listening socket, one index, one store."""
    data = tmp_path / "data"
    node = node_process(data_dir=data, env={"SPACING_SCP_NODE_PROCESSES": "2"})

    def worker_ready() -> bool:
        return node.log_path.read_text().count(f"listening on 127.0.0.1:{node.port}") >= 2

    deadline = time.monotonic() + 30
    while not worker_ready():
        assert time.monotonic() < deadline, "the second receiving process did not start"
        time.sleep(0.1)
    study, series = new_uid(), new_uid()
    parts = [
        [
            write_ct(
                tmp_path / f"{s}-{i}.dcm",
                study=study,
                series=series,
                position=(0, 0, float(4 * i + s)),
            )
            for i in range(6)
        ]
        for s in range(4)
    ]
    results: list[Any] = []
    threads = [
        threading.Thread(target=lambda p=p: results.extend(send_files(node.port, p))) for p in parts
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(results) == 24 and all(r.status == status.SUCCESS for r in results)
    out = _cli("instances", "--json", "--data-dir", str(data))
    assert len(json.loads(out.stdout)) == 24
    # Both processes received, and /metrics (served by the first) counts what both did.
    pids = set(
        re.findall(r"\[pid (\d+)\] spacing_scp\.instance: C-STORE", node.log_path.read_text())
    )
    assert len(pids) == 2, pids
    with urllib.request.urlopen(f"http://127.0.0.1:{node.http_port}/metrics", timeout=10) as rsp:
        families = {f.name: f for f in text_string_to_metric_families(rsp.read().decode())}
    received = families["spacing_scp_instances_received"].samples
    assert {(s.name, s.labels["status"], s.value) for s in received} == {
        ("spacing_scp_instances_received_total", "0x0000", 24.0)
    }
    store = {s.name: s.value for s in families["spacing_scp_store_seconds"].samples if not s.labels}
    assert store["spacing_scp_store_seconds_count"] == 24.0
    assert families["spacing_scp_index_instances"].samples[0].value == 24.0
    assert node.stop(signal.SIGTERM) == 0


def test_extra_process_ending_leaves_the_listener_to_the_others(
    node_process: Any, tmp_path: Path
) -> None:
    """The extra process closes only its own descriptor of the shared listening socket: a
    shutdown() there would stop the first process accepting too."""
    from bench.run import children_of

    node = node_process(data_dir=tmp_path / "data", env={"SPACING_SCP_NODE_PROCESSES": "2"})
    deadline = time.monotonic() + 30
    while node.log_path.read_text().count("listening on") < 2:
        assert time.monotonic() < deadline, "the second receiving process did not start"
        time.sleep(0.1)
    [worker] = [  # the extra receiving process, not the indexer process
        pid
        for pid in children_of(node.proc.pid)
        if b"--worker" in Path(f"/proc/{pid}/cmdline").read_bytes()
    ]
    subprocess.run(["kill", "-TERM", str(worker)], check=True)
    deadline = time.monotonic() + 30
    while "receiving process" not in node.log_path.read_text():
        assert time.monotonic() < deadline, "the first process did not notice"
        time.sleep(0.1)
    paths = [write_ct(tmp_path / f"after-{i}.dcm", instance_number=i) for i in range(3)]
    assert [r.status for r in send_files(node.port, paths)] == [status.SUCCESS] * 3
    assert node.stop(signal.SIGTERM) == 0


def test_metrics_of_the_indexer_process_reach_the_first_process(
    node_process: Any, tmp_path: Path
) -> None:
    """``[node] indexer = "process"`` (the default): the index lag histogram (one
    observation per instance), the forwarding counts and a destination's down state are
    made in the indexer process;
    ``/metrics``, served by the first process, sums every process of the node (issue 14)."""
    config = tmp_path / "node.toml"
    config.write_text(
        "[[destinations]]\nname = 'nowhere'\nae_title = 'NOWHERE'\nhost = '127.0.0.1'\n"
        "port = 9\nretry_initial_s = 3600\nretry_max_s = 3600\n"
    )
    node = node_process(data_dir=tmp_path / "data", config=config)
    study, series = new_uid(), new_uid()
    files = [write_ct(tmp_path / f"{i}.dcm", study=study, series=series) for i in range(4)]
    assert all(r.status == status.SUCCESS for r in send_files(node.port, files))
    deadline = time.monotonic() + 30
    while True:
        with urllib.request.urlopen(
            f"http://127.0.0.1:{node.http_port}/metrics", timeout=10
        ) as rsp:
            families = {f.name: f for f in text_string_to_metric_families(rsp.read().decode())}
        # a family with nothing counted yet is not listed at all
        lag_family = families.get("spacing_scp_index_lag_seconds")
        lag = {s.name: s.value for s in lag_family.samples} if lag_family else {}
        forward = families.get("spacing_scp_forward_sent")
        sent = forward.samples if forward is not None else []
        down_family = families.get("spacing_scp_forward_destination_down")
        down = (
            {s.labels["destination"]: s.value for s in down_family.samples} if down_family else {}
        )
        if lag.get("spacing_scp_index_lag_seconds_count") == 4.0 and sent and down:
            break
        assert time.monotonic() < deadline, (lag, sent, down)
        time.sleep(0.2)
    assert {s.labels["destination"] for s in sent} == {"nowhere"}
    # the destination nobody listens on is down, as the indexer process's worker found
    assert down == {"nowhere": 1.0}
    assert node.stop(signal.SIGTERM) == 0
