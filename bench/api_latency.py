"""HTTP API latency with a large index (issue 4): ``python -m bench.api_latency``.

Fills an index with N series (default 10,000; 3 instances each, through the same
``record_instance`` the node uses, so series geometry and findings are real), starts the
API server on it, then times requests of each kind and reports p50/p95 in ms.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from scp.api.app import build_app
from scp.api.server import ApiServer
from scp.series import SliceGeometry
from scp.services.indexing import InstanceEntry, index_instance
from scp.services.series_query import IndexQueries
from storage.db import ensure_schema, make_engine, make_session_factory, write_session
from storage.index import FindingRow

ROOT = "1.2.826.0.1.3680043.8.498.99"


def populate(url: str, n_series: int, per_series: int = 3) -> tuple[list[str], list[str]]:
    engine = make_engine(url)
    ensure_schema(engine)
    sessions = make_session_factory(engine)
    series_uids, sop_uids = [], []
    now = datetime.now(UTC)
    rng = random.Random(7)
    batch = 200
    for start in range(0, n_series, batch):
        with write_session(sessions) as session:
            for s in range(start, min(start + batch, n_series)):
                study = f"{ROOT}.1.{s // 4}"
                series = f"{ROOT}.2.{s}"
                series_uids.append(series)
                modality = "CT" if s % 3 else "MR"
                for i in range(per_series):
                    sop = f"{ROOT}.3.{s}.{i}"
                    sop_uids.append(sop)
                    gap = 1.25 if s % 10 else 2.5
                    findings = []
                    if s % 7 == 0:
                        findings.append(
                            FindingRow(
                                "PIXEL_SPACING_SUSPECT_REVERSED",
                                "warning",
                                "suspect reversed (rule 7)",
                            )
                        )
                    entry = InstanceEntry(
                        study_instance_uid=study,
                        series_instance_uid=series,
                        sop_instance_uid=sop,
                        sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
                        transfer_syntax_uid="1.2.840.10008.1.2.1",
                        path=f"{study}/{series}/x",
                        size_bytes=530000,
                        calling_ae_title="CT1",
                        called_ae_title="SPACING_SCP",
                        received_at=now,
                        status=0,
                        series={"modality": modality},
                        instance={
                            "pixel_spacing_row_mm": 0.7,
                            "pixel_spacing_column_mm": 0.7,
                            "spacing_source": "PixelSpacing",
                            "verdict": "ok",
                            "received_pixel_spacing": "0.7\\0.7",
                        },
                        findings=findings,
                        slices=[
                            SliceGeometry(
                                f"{ROOT}.9",
                                512,
                                512,
                                (1, 0, 0, 0, 1, 0),
                                (0.0, 0.0, i * gap),
                                (0.7, 0.7),
                                1.0,
                                modality=modality,
                                sop_instance_uid=sop,
                            )
                        ],
                    )
                    index_instance(session, entry)
        rng.random()
    engine.dispose()
    return series_uids, sop_uids


def timed(url: str) -> float:
    t0 = time.perf_counter()
    with urllib.request.urlopen(url, timeout=30) as rsp:
        rsp.read()
    return (time.perf_counter() - t0) * 1000


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(q * (len(values) - 1)))]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--series", type=int, default=10_000)
    p.add_argument("--requests", type=int, default=200)
    p.add_argument("--database-url", help="default: a temporary SQLite file")
    p.add_argument("--json", type=Path, help="write the figures here too")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        url = args.database_url or f"sqlite:///{Path(tmp) / 'index.sqlite3'}"
        t0 = time.perf_counter()
        series_uids, sop_uids = populate(url, args.series)
        fill_s = time.perf_counter() - t0
        engine = make_engine(url)
        sessions = make_session_factory(engine)
        api = ApiServer(build_app(sessions, IndexQueries(60.0), "BENCH"), "127.0.0.1", 0)
        api.start()
        base = f"http://127.0.0.1:{api.port}"
        rng = random.Random(1)
        kinds: dict[str, Any] = {
            "GET /series?limit=100": lambda: f"{base}/series?limit=100",
            "GET /series?modality=MR&limit=100": lambda: f"{base}/series?modality=MR&limit=100",
            "GET /series?code=...&limit=100": lambda: (
                f"{base}/series?code=PIXEL_SPACING_SUSPECT_REVERSED&limit=100"
            ),
            "GET /series/{uid}": lambda: f"{base}/series/{rng.choice(series_uids)}",
            "GET /series/{uid}/instances": lambda: (
                f"{base}/series/{rng.choice(series_uids)}/instances"
            ),
            "GET /instances/{uid}": lambda: f"{base}/instances/{rng.choice(sop_uids)}",
        }
        results = {}
        for name, make in kinds.items():
            timed(make())  # warm up
            samples = [timed(make()) for _ in range(args.requests)]
            results[name] = {
                "p50_ms": round(statistics.median(samples), 2),
                "p95_ms": round(pct(samples, 0.95), 2),
            }
        api.stop()
        engine.dispose()
    report = {
        "series": args.series,
        "instances": len(sop_uids),
        "fill_seconds": round(fill_s, 1),
        "requests_per_kind": args.requests,
        "latency": results,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    width = max(len(k) for k in results)
    print(f"{args.series} series, {len(sop_uids)} instances indexed in {fill_s:.1f} s")
    print(f"{'request'.ljust(width)}  p50 ms  p95 ms")
    for name, r in results.items():
        print(f"{name.ljust(width)}  {r['p50_ms']:6.2f}  {r['p95_ms']:6.2f}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
