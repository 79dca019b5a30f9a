"""Issue 8: several nodes, one PostgreSQL index, one store, one forward queue."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from scp import status
from tests.conftest import NodeProcess, send_files
from tests.pacs import Pacs, wait_until
from tests.series_builders import regular, write_series


def _config(path: Path, url: str, pacs_port: int) -> Path:
    path.write_text(
        f"""
[storage]
database_url = "{url}"
[series]
quiet_seconds = 1.0
[forwarding]
lease_s = 5.0
poll_s = 0.5
[[destinations]]
name = "pacs"
ae_title = "PACS"
host = "127.0.0.1"
port = {pacs_port}
retry_initial_s = 0.2
retry_max_s = 1.0
"""
    )
    return path


def test_two_nodes_one_database_one_series_split_across_both(
    tmp_path: Path, postgres_url: str
) -> None:
    pacs = Pacs().start()
    config = _config(tmp_path / "node.toml", postgres_url, pacs.port)
    data = tmp_path / "shared-store"
    nodes: list[NodeProcess] = []
    try:
        for _ in range(2):
            nodes.append(NodeProcess(data, config=config).start())
        positions = regular(40)
        del positions[17]
        uid, files = write_series(tmp_path / "series", positions)
        halves = [files[0::2], files[1::2]]
        results: list[Any] = []

        def send(node: NodeProcess, part: list[Path]) -> None:
            results.extend(send_files(node.port, part))

        threads = [
            threading.Thread(target=send, args=(n, h)) for n, h in zip(nodes, halves, strict=True)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(180)
        assert len(results) == 39 and all(r.status == status.SUCCESS for r in results)

        assert wait_until(lambda: len(pacs.uids()) == 39, timeout=60)
        time.sleep(1.5)  # anything sent twice would have arrived by now
        counts = pacs.uids()
        assert len(counts) == 39 and set(counts.values()) == {1}, counts.most_common(3)

        for node in nodes:  # both nodes answer from the one index
            url = f"http://127.0.0.1:{node.http_port}/series/{uid}"
            with urllib.request.urlopen(url, timeout=30) as rsp:
                summary = json.loads(rsp.read())
            assert summary["instance_count"] == 39
            assert summary["slice_spacing"]["mm"] == 1.25
            assert summary["slice_spacing"]["missing_slices"] == 1
            assert "SLICE_MISSING" in {f["code"] for f in summary["findings"]}
    finally:
        for node in nodes:
            if node.proc is not None and node.proc.poll() is None:
                assert node.stop() == 0
        pacs.stop()
