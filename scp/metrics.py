"""In-process counters and histograms, exposed as Prometheus text (``GET /metrics``)."""

from __future__ import annotations

import threading
from collections import defaultdict

_LATENCY_BUCKETS_MS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)


def _labels(labels: tuple[tuple[str, str], ...]) -> str:
    if not labels:
        return ""
    inner = ",".join(
        f'{k}="{v.replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
        for k, v in labels
    )
    return "{" + inner + "}"


class Metrics:
    """A tiny thread-safe metrics registry (no dependency on prometheus_client)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counters: dict[str, dict[tuple[tuple[str, str], ...], float]] = defaultdict(dict)
        self._help: dict[str, str] = {}
        self._hist: dict[str, list[int]] = {}
        self._hist_sum: dict[str, float] = defaultdict(float)
        self._hist_count: dict[str, int] = defaultdict(int)

    def describe(self, name: str, text: str) -> None:
        self._help[name] = text

    def inc(self, name: str, value: float = 1.0, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            series = self._counters[name]
            series[key] = series.get(key, 0.0) + value

    def observe_ms(self, name: str, value_ms: float) -> None:
        with self._lock:
            buckets = self._hist.setdefault(name, [0] * len(_LATENCY_BUCKETS_MS))
            for i, bound in enumerate(_LATENCY_BUCKETS_MS):
                if value_ms <= bound:
                    buckets[i] += 1
            self._hist_sum[name] += value_ms / 1000.0
            self._hist_count[name] += 1

    def render(self, gauges: dict[str, float] | None = None) -> str:
        lines: list[str] = []
        with self._lock:
            for name, series in sorted(self._counters.items()):
                if name in self._help:
                    lines.append(f"# HELP {name} {self._help[name]}")
                lines.append(f"# TYPE {name} counter")
                for key, value in sorted(series.items()):
                    lines.append(f"{name}{_labels(key)} {value:g}")
            for name, buckets in sorted(self._hist.items()):
                if name in self._help:
                    lines.append(f"# HELP {name} {self._help[name]}")
                lines.append(f"# TYPE {name} histogram")
                for bound, count in zip(_LATENCY_BUCKETS_MS, buckets, strict=True):
                    lines.append(f'{name}_bucket{{le="{bound / 1000:g}"}} {count}')
                lines.append(f'{name}_bucket{{le="+Inf"}} {self._hist_count[name]}')
                lines.append(f"{name}_sum {self._hist_sum[name]:g}")
                lines.append(f"{name}_count {self._hist_count[name]}")
        typed: set[str] = set()
        for name, value in sorted((gauges or {}).items()):
            base = name.split("{", 1)[0]  # a gauge name may carry its labels
            if base not in typed:
                typed.add(base)
                lines.append(f"# TYPE {base} gauge")
            lines.append(f"{name} {value:g}")
        return "\n".join(lines) + "\n"


METRICS = Metrics()
METRICS.describe("spacing_scp_instances_received_total", "C-STORE requests answered, by status")
METRICS.describe("spacing_scp_findings_total", "Spacing findings raised, by code and severity")
METRICS.describe("spacing_scp_store_seconds", "Time from receive to answer per instance")
METRICS.describe("spacing_scp_associations_total", "Associations ended, by how they ended")
