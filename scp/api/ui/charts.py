"""Inline SVG charts of the web page, computed here so the templates only place shapes:
arrivals per minute (overview) and slice positions along the stack normal (series page).
Coordinates are SVG user units; the SVGs scale with their container (``viewBox``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from scp.services.dashboard import SlicePlot

WIDTH = 720
HEIGHT = 160


@dataclass
class Bar:
    x: float
    y: float
    w: float
    h: float
    label: str


@dataclass
class BarChart:
    bars: list[Bar]
    peak: int
    width: int = WIDTH
    height: int = HEIGHT


def arrivals(per_minute: list[int]) -> BarChart:
    """One bar per minute, oldest left; ``peak`` is the tallest bar's count."""
    peak = max(per_minute, default=0)
    n = max(1, len(per_minute))
    slot = WIDTH / n
    bars = []
    for i, count in enumerate(per_minute):
        h = 0.0 if peak == 0 else (HEIGHT - 20) * count / peak
        minutes_ago = len(per_minute) - 1 - i
        bars.append(
            Bar(i * slot + 1, HEIGHT - h, max(1.0, slot - 2), h, f"{count} ({minutes_ago} min ago)")
        )
    return BarChart(bars, peak)


@dataclass
class Marker:
    x: float
    mm: float
    count: int
    title: str


@dataclass
class GapMark:
    x: float
    w: float
    missing: int
    title: str


@dataclass
class SlicePlotSvg:
    markers: list[Marker]
    gaps: list[GapMark]
    ticks: list[tuple[float, str]] = field(default_factory=list)
    width: int = WIDTH
    height: int = 120


def slice_plot(plot: SlicePlot) -> SlicePlotSvg:
    """Markers at each distinct position (x: mm along the normal), gaps marked with the
    slices missing in them, five axis ticks."""
    lo, hi = plot.points[0].mm, plot.points[-1].mm
    span = (hi - lo) or 1.0
    pad = 30.0

    def x(mm: float) -> float:
        return pad + (WIDTH - 2 * pad) * (mm - lo) / span

    markers = [
        Marker(
            x(p.mm),
            p.mm,
            p.count,
            f"{p.mm:.2f} mm" + (f": {p.count} slices (duplicate)" if p.count > 1 else ""),
        )
        for p in plot.points
    ]
    gaps = [
        GapMark(
            x(g.start_mm),
            x(g.end_mm) - x(g.start_mm),
            g.missing,
            f"gap {g.end_mm - g.start_mm:.2f} mm from {g.start_mm:.2f} to {g.end_mm:.2f} mm: "
            f"{g.missing} slice(s) missing",
        )
        for g in plot.gaps
    ]
    ticks = [(x(lo + span * i / 4), f"{lo + span * i / 4:.1f}") for i in range(5)]
    return SlicePlotSvg(markers, gaps, ticks)
