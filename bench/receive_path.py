"""The receive path without the network: ``Ingestor.ingest`` on W2's instances, in one
process, with the indexer beside it (``[node] indexer = "process"``: file + journal
record) and inline (file + index transaction), alternately; then the indexer's cost per
instance when it indexes the journal in batches.  Same-run ratios, robust to a machine
shared with other jobs (CPU time per instance is printed next to wall time).

    python -m bench.receive_path            # 600 instances, 2 rounds
    python -m bench.receive_path --count 3000 --rounds 3

Needs the W2 workload in the bench cache (``python -m bench.run --workloads W2`` once).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from pydicom import dcmread

from scp.config import load_config
from scp.node import Node
from scp.services.ingest import Received, stored_file_meta
from storage.part10 import read_received

CACHE = Path(__file__).parent / ".cache"


def _round(mode: str, sources: list[Path], work: Path) -> str:
    data = work / mode
    cfg = load_config(
        None,
        environ={},
        overrides={
            "storage.data_dir": str(data),
            "storage.min_free_mb": 0,
            "node.port": 0,
            "node.indexer": mode,
        },
    )
    node = Node(cfg, external_indexer=True)
    received = []
    for i, src in enumerate(sources):
        # as the network layer leaves it: in the store's tmp/, with the stored File Meta
        # (scp.net.compat.write_received_file_meta), so the ingest renames it into place
        target = node.store.tmp / f"{mode}-{i}.dcm"
        ds = dcmread(src, stop_before_pixels=True)
        sop_class, sop_instance = str(ds.SOPClassUID), str(ds.SOPInstanceUID)
        meta = stored_file_meta(
            sop_class, sop_instance, str(ds.file_meta.TransferSyntaxUID), "BENCH", cfg.node.ae_title
        )
        raw = src.read_bytes()
        target.write_bytes(raw[:128] + b"DICM" + meta + raw[read_received(src).dataset_offset :])
        received.append(Received(target, sop_class, sop_instance, "BENCH", "SPACING_SCP"))
    wall, cpu = time.perf_counter(), time.process_time()
    for rcv in received:
        outcome = node.ingestor.ingest(rcv)
        if not outcome.stored:
            raise SystemExit(f"not stored: 0x{outcome.status:04X} {outcome.comment}")
    n = len(received)
    line = (
        f"{mode:8s} receive path {(time.perf_counter() - wall) / n * 1000:6.2f} ms wall "
        f"{(time.process_time() - cpu) / n * 1000:6.2f} ms CPU per instance"
    )
    if mode == "process":
        wall, cpu = time.perf_counter(), time.process_time()
        indexed = node.catch_up()
        line += (
            f"; indexer (batches) {(time.perf_counter() - wall) / indexed * 1000:.2f} ms wall "
            f"{(time.process_time() - cpu) / indexed * 1000:.2f} ms CPU per instance"
        )
    node.engine.dispose()
    shutil.rmtree(data)
    return line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=600)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    sources = sorted(CACHE.glob("W2-*/**/*.dcm"))[: args.count]
    if not sources:
        raise SystemExit("no W2 workload in bench/.cache: run `python -m bench.run --workloads W2`")
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.rounds):
            for mode in ("process", "inline"):
                print(_round(mode, sources, Path(tmp)), flush=True)


if __name__ == "__main__":
    main()
