"""The benchmark workloads (issue 7): generated once, cached as real Part 10 files.

W1  400 CT slices 512x512, 16 bit (about 210 MB), one series, one sender.
W2  3000 small CT instances 64x64, 16 bit (about 9 KB each), one series, one sender.
W3  one native multi-frame instance of about 1 GiB, written without holding it in memory.
W4  4 senders at once, 100 CT slices 512x512 each (4 studies), one folder per sender.

``--quick`` shrinks them (40 slices, 300 instances, 100 MiB, 4 x 20) for the CI smoke job.
Each workload lives in its own folder of the cache, keyed by its parameters; a ``spec.json``
written last marks it complete, so an interrupted generation is redone, never reused.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from tests.dicom_factory import new_uid, write_ct, write_large_multiframe

#: Bump when the generated files change, so stale caches are regenerated.
GENERATOR_VERSION = 1

WORKLOAD_NAMES: tuple[str, ...] = ("W1", "W2", "W3", "W4")


@dataclass(frozen=True)
class WorkloadSpec:
    """What one workload is; the cache folder name is derived from it."""

    name: str
    description: str
    kind: str  # "ct" (slices) or "multiframe"
    senders: int
    instances_per_sender: int
    side: int = 512  # Rows = Columns of CT slices
    megabytes: int = 0  # multi-frame size in MiB

    @property
    def instances(self) -> int:
        return self.senders * self.instances_per_sender

    @property
    def key(self) -> str:
        if self.kind == "multiframe":
            return f"{self.name}-multiframe-{self.megabytes}MiB-v{GENERATOR_VERSION}"
        return (
            f"{self.name}-ct{self.side}-{self.senders}x{self.instances_per_sender}"
            f"-v{GENERATOR_VERSION}"
        )


@dataclass(frozen=True)
class Workload:
    """A generated workload: one folder of files per sender."""

    spec: WorkloadSpec
    root: Path
    sender_dirs: tuple[Path, ...]
    total_bytes: int

    @property
    def instances(self) -> int:
        return self.spec.instances


def specs(quick: bool) -> dict[str, WorkloadSpec]:
    """The four workloads, full size or the ``--quick`` size."""
    w1, w2, w3_mb, w4 = (40, 300, 100, 20) if quick else (400, 3000, 1024, 100)
    return {
        "W1": WorkloadSpec(
            "W1",
            f"{w1} CT slices 512x512x16 bit, 1 sender",
            "ct",
            senders=1,
            instances_per_sender=w1,
        ),
        "W2": WorkloadSpec(
            "W2",
            f"{w2} small CT instances 64x64x16 bit, 1 sender",
            "ct",
            senders=1,
            instances_per_sender=w2,
            side=64,
        ),
        "W3": WorkloadSpec(
            "W3",
            f"one multi-frame instance of {w3_mb} MiB, 1 sender",
            "multiframe",
            senders=1,
            instances_per_sender=1,
            megabytes=w3_mb,
        ),
        "W4": WorkloadSpec(
            "W4",
            f"4 senders at once, {w4} CT slices 512x512x16 bit each",
            "ct",
            senders=4,
            instances_per_sender=w4,
        ),
    }


def _write_series(folder: Path, count: int, side: int) -> None:
    """One study, one series of ``count`` slices 1 mm apart (a realistic geometry)."""
    study, series = new_uid(), new_uid()
    for i in range(count):
        write_ct(
            folder / f"slice{i:05d}.dcm",
            study=study,
            series=series,
            rows=side,
            columns=side,
            position=(-100.0, -100.0, float(i)),
            instance_number=i + 1,
        )


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.iterdir() if p.is_file())


def generate(spec: WorkloadSpec, root: Path) -> None:
    """Write the workload's files below ``root`` (which must be empty or absent)."""
    for s in range(spec.senders):
        folder = root / f"sender{s}"
        folder.mkdir(parents=True, exist_ok=True)
        if spec.kind == "multiframe":
            write_large_multiframe(folder / "multiframe.dcm", spec.megabytes)
        else:
            _write_series(folder, spec.instances_per_sender, spec.side)


def _load(spec: WorkloadSpec, root: Path) -> Workload | None:
    """The cached workload in ``root`` if it is complete and of this spec."""
    sender_dirs = tuple(root / f"sender{s}" for s in range(spec.senders))
    try:
        saved = json.loads((root / "spec.json").read_text())
        counts_ok = all(
            sum(1 for _ in d.iterdir()) == spec.instances_per_sender for d in sender_dirs
        )
    except (OSError, ValueError):
        return None
    if saved.get("spec") != asdict(spec) or not counts_ok:
        return None
    return Workload(spec, root, sender_dirs, int(saved["total_bytes"]))


def ensure(spec: WorkloadSpec, cache_dir: Path, log: Callable[[str], None] = print) -> Workload:
    """The cached workload, generated first when absent or incomplete.

    Generation happens in a private folder renamed into place at the end, so that two
    benchmarks started at once never read or delete each other's half-written files.
    """
    root = cache_dir / spec.key
    cached = _load(spec, root)
    if cached is not None:
        return cached
    log(f"generating {spec.name} ({spec.description}) in {root} ...")
    building = cache_dir / f".{spec.key}.{os.getpid()}.tmp"
    shutil.rmtree(building, ignore_errors=True)
    try:
        generate(spec, building)
        sender_dirs = tuple(building / f"sender{s}" for s in range(spec.senders))
        total = sum(_folder_bytes(d) for d in sender_dirs)
        (building / "spec.json").write_text(
            json.dumps({"spec": asdict(spec), "total_bytes": total}, indent=2)
        )
        if root.exists() and _load(spec, root) is None:  # an invalid or stale copy
            shutil.rmtree(root, ignore_errors=True)
        with contextlib.suppress(OSError):  # another process may have won the race
            building.rename(root)
    finally:
        shutil.rmtree(building, ignore_errors=True)
    loaded = _load(spec, root)
    if loaded is None:
        raise RuntimeError(f"workload {spec.name}: could not build {root}")
    return loaded
