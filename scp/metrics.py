"""The node's counters and histograms, through ``prometheus_client`` (``GET /metrics``).

Every metric is declared here, by the name and labels it is exposed under
(``spacing_scp_instances_received_total{status="0x0000"}``...); callers count with
:meth:`Metrics.inc` and :meth:`Metrics.observe_ms`.  With ``[node] processes`` above 1 the
node switches to ``prometheus_client``'s multiprocess mode (:meth:`Metrics.use_multiprocess`):
each receiving process writes its values to files in one folder and ``/metrics``, served
by the first process, sums them over all processes (extra processes' counts included, and
kept after one of them ended).  Values are written by ``prometheus_client`` as full
numbers (3000001, never ``3e+06``).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import prometheus_client
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    values,
)
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

#: Histogram bucket bounds, in seconds (1 ms to 10 s).
LATENCY_BUCKETS_S = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10)

#: Counter name (as exposed, with ``_total``) -> (help text, label names).
COUNTERS: dict[str, tuple[str, tuple[str, ...]]] = {
    "spacing_scp_instances_received_total": (
        "C-STORE requests answered, by status",
        ("status",),
    ),
    "spacing_scp_stored_files_total": (
        "Instances stored over C-STORE, by how their file was placed: renamed (received "
        "with the stored File Meta, moved into place) or written (copied from the received file)",
        ("how",),
    ),
    "spacing_scp_findings_total": (
        "Spacing findings raised, by code and severity",
        ("code", "severity"),
    ),
    "spacing_scp_associations_total": ("Associations ended, by how they ended", ("end",)),
    "spacing_scp_forward_sent_total": (
        "Forwarding attempts by destination and outcome (done, retry, dead)",
        ("destination", "outcome"),
    ),
    "spacing_scp_find_total": (
        "C-FIND requests answered, by level and status",
        ("level", "status"),
    ),
    "spacing_scp_commitment_requests_total": (
        "Storage Commitment requests (N-ACTION) accepted",
        (),
    ),
    "spacing_scp_commitment_reports_total": (
        "Storage Commitment report deliveries (N-EVENT-REPORT), by outcome (done, retry, dead)",
        ("outcome",),
    ),
    "spacing_scp_retrieve_total": (
        "C-MOVE/C-GET requests, by operation and final status (done or the refusal status)",
        ("op", "status"),
    ),
    "spacing_scp_read_stale_total": (
        "Readers answered before every acknowledged instance was indexed",
        (),
    ),
    "spacing_scp_index_failed_total": ("Journal records the indexer passed over", ()),
    "spacing_scp_stow_instances_total": (
        "STOW-RS parts by the C-STORE status they were given",
        ("status",),
    ),
}
#: Gauge name -> (help text, label names): values a process sets (``Metrics.set``). With
#: several processes ``/metrics`` shows, per label set, the largest value among the live
#: processes (``prometheus_client``'s ``livemax``).
GAUGES: dict[str, tuple[str, tuple[str, ...]]] = {
    "spacing_scp_forward_destination_down": (
        "1 while the forwarding destination cannot be reached (no association), else 0",
        ("destination",),
    ),
}
#: Histogram name -> help text (no labels; values in seconds).
HISTOGRAMS: dict[str, str] = {
    "spacing_scp_store_seconds": "Time from receive to answer per instance",
    "spacing_scp_find_seconds": "Time to answer a C-FIND request",
    "spacing_scp_read_wait_seconds": "Time readers waited for acknowledged instances",
    "spacing_scp_index_lag_seconds": "Time from the C-STORE Success to the instance indexed",
}

# ``*_created`` samples would add a series per label set that no dashboard of ours reads.
prometheus_client.disable_created_metrics()


def _number(value: float) -> str:
    """A gauge value as the exposition format writes it: ``3000001``, ``0.25``."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


class Metrics:
    """The node's metrics in one ``prometheus_client`` registry (thread-safe)."""

    def __init__(self) -> None:
        self.multiprocess_dir: Path | None = None
        self._build()

    def _build(self) -> None:
        self.registry = CollectorRegistry()
        self._counters = {
            name: Counter(name, text, labels, registry=self.registry)
            for name, (text, labels) in COUNTERS.items()
        }
        self._histograms = {
            name: Histogram(name, text, buckets=LATENCY_BUCKETS_S, registry=self.registry)
            for name, text in HISTOGRAMS.items()
        }
        self._gauges = {
            name: Gauge(name, text, labels, registry=self.registry, multiprocess_mode="livemax")
            for name, (text, labels) in GAUGES.items()
        }

    def use_multiprocess(self, directory: Path, *, fresh: bool) -> None:
        """Count in files under ``directory``, shared by the node's processes (sets
        ``PROMETHEUS_MULTIPROC_DIR``, which the extra processes inherit).  ``fresh``: the
        first process empties the folder (values of an earlier run).  Call before anything
        is counted in this process."""
        if fresh:
            shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir(parents=True, exist_ok=True)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
        # prometheus_client picks its value class from the variable when it is imported;
        # the node reads its configuration later, so it picks it again here (once).
        if not getattr(values.ValueClass, "_multiprocess", False):
            values.ValueClass = values.MultiProcessValue()
        self.multiprocess_dir = directory
        self._build()

    def inc(self, name: str, value: float = 1.0, **labels: str) -> None:
        """Add ``value`` to the counter ``name`` (a key of :data:`COUNTERS`)."""
        counter = self._counters[name]
        (counter.labels(**labels) if labels else counter).inc(value)

    def set(self, name: str, value: float, **labels: str) -> None:
        """Set the gauge ``name`` (a key of :data:`GAUGES`) to ``value``."""
        gauge = self._gauges[name]
        (gauge.labels(**labels) if labels else gauge).set(value)

    def process_ended(self, pid: int) -> None:
        """Forget the gauges of a process of the node that ended (its counters and
        histograms stay in the sums); nothing outside multiprocess mode."""
        if self.multiprocess_dir is not None:
            mark_process_dead(pid, str(self.multiprocess_dir))

    def observe_ms(self, name: str, value_ms: float) -> None:
        """Record ``value_ms`` milliseconds in the histogram ``name`` (in seconds)."""
        self._histograms[name].observe(value_ms / 1000.0)

    def render(self, gauges: dict[str, float] | None = None) -> str:
        """The text exposition (format 0.0.4) of every process's metrics, then ``gauges``
        (name, labels included, -> value: computed by the caller at scrape time)."""
        if self.multiprocess_dir is not None:
            registry = CollectorRegistry()
            MultiProcessCollector(registry, str(self.multiprocess_dir))
        else:
            registry = self.registry
        lines = [generate_latest(registry).decode().rstrip("\n")]
        typed: set[str] = set()
        for name, value in sorted((gauges or {}).items()):
            base = name.split("{", 1)[0]  # a gauge name may carry its labels
            if base not in typed:
                typed.add(base)
                lines.append(f"# TYPE {base} gauge")
            lines.append(f"{name} {_number(value)}")
        return "\n".join(lines) + "\n"


METRICS = Metrics()
