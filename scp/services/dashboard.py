"""What the operators' web page shows (issue 19): the overview, the series list rows and
the slice-position plot of a series. Pure reads of the index; no HTTP here (the pages are
rendered by :mod:`scp.api.ui`).
"""

from __future__ import annotations

import itertools
import shutil
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from scp.services.forwarding.routing import worst_severity
from scp.services.series_query import IndexQueries
from storage import dashboard, destinations, outbox

#: Minutes of arrivals the overview charts.
CHART_MINUTES = 60


def overview(
    session: Session,
    *,
    data_dir: Path,
    destination_names: Sequence[str],
    associations: Callable[[], int] | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """The overview: ``associations`` running now (``None``: unknown in this process),
    ``per_minute`` (instances received in each of the last :data:`CHART_MINUTES` minutes,
    oldest first), ``disk_free_bytes`` / ``disk_total_bytes`` of the data directory,
    ``last_received_at`` and ``last_indexed_age_s`` (seconds since the newest instance was
    indexed; with ``[node] indexer = "inline"`` the index lag is zero by construction, else
    the web page adds the indexer's own gauges) and the
    forwarding queues (:func:`storage.outbox.summary`, each with ``paused``)."""
    now = now or datetime.now(UTC)
    since = now.replace(second=0, microsecond=0) - timedelta(minutes=CHART_MINUTES - 1)
    per_minute = [0] * CHART_MINUTES
    for t in dashboard.received_since(session, since):
        slot = int((t - since).total_seconds() // 60)
        if 0 <= slot < CHART_MINUTES:
            per_minute[slot] += 1
    usage = shutil.disk_usage(data_dir)
    last = dashboard.last_received(session)
    return {
        "associations": associations() if associations is not None else None,
        "per_minute": per_minute,
        "chart_start": since,
        "disk_free_bytes": usage.free,
        "disk_total_bytes": usage.total,
        "last_received_at": last,
        "last_indexed_age_s": None if last is None else max(0.0, (now - last).total_seconds()),
        "destinations": queues(session, destination_names, now),
    }


def queues(
    session: Session, destination_names: Sequence[str], now: datetime | None = None
) -> list[dict[str, Any]]:
    """:func:`storage.outbox.summary` of every destination, with ``paused``."""
    held = destinations.paused(session)
    out = outbox.summary(session, destination_names, now)
    for entry in out:
        entry["paused"] = entry["destination"] in held
    return out


@dataclass(frozen=True)
class SeriesFilter:
    """The series list's filters (``None``/empty: no filter). Dates are ``YYYYMMDD``."""

    study_date_from: str | None = None
    study_date_to: str | None = None
    modality: str | None = None
    calling_ae_title: str | None = None
    verdict: str | None = None
    code: str | None = None


def series_rows(
    session: Session,
    queries: IndexQueries,
    filters: SeriesFilter,
    *,
    limit: int = 50,
    cursor: str | None = None,
) -> tuple[list[dict[str, Any]], str | None]:
    """One page of the series list, newest first: each SERIES (:mod:`scp.models.series`)
    with ``patient_id``, ``study_date``, ``calling_ae_titles`` and ``verdict`` (the worst
    instance verdict). ``ValueError`` for a bad cursor."""
    where = dashboard.series_conditions(
        calling_ae_title=filters.calling_ae_title,
        verdict=filters.verdict,
        study_date_from=filters.study_date_from,
        study_date_to=filters.study_date_to,
    )
    items, nxt = queries.list_series(
        session,
        modality=filters.modality,
        code=filters.code,
        limit=limit,
        cursor=cursor,
        where=where,
    )
    extras = dashboard.series_extras(session, [s["series_instance_uid"] for s in items])
    for item in items:
        extra = extras.get(item["series_instance_uid"], {})
        item["patient_id"] = extra.get("patient_id")
        item["study_date"] = extra.get("study_date")
        item["calling_ae_titles"] = extra.get("calling_ae_titles", [])
        item["verdict"] = worst_severity(extra.get("verdicts", ()))
    return items, nxt


@dataclass(frozen=True)
class PlotPoint:
    """One distinct slice position along the stack normal, mm, and how many slices sit
    there (``count > 1``: duplicates, rule 27)."""

    mm: float
    count: int
    instance_ids: tuple[int, ...]


@dataclass(frozen=True)
class PlotGap:
    """A gap between consecutive positions, mm; ``missing`` slices fit in it (rule 26)."""

    start_mm: float
    end_mm: float
    missing: int


@dataclass(frozen=True)
class SlicePlot:
    """The positions of one stack along its normal (rule 23) for the series page's plot."""

    stack_key: str
    points: list[PlotPoint]
    gaps: list[PlotGap]
    median_gap_mm: float | None


def slice_plot(session: Session, series_id: int, stack_key: str | None) -> SlicePlot | None:
    """The plot of stack ``stack_key`` of a series (the first stack when ``None``); ``None``
    without positions. A gap over 1.5 times the median gap is marked, with
    ``round(gap / median) - 1`` missing slices (the rulebook's rule 26 reading)."""
    stacks = dashboard.stack_positions(session, series_id)
    if not stacks:
        return None
    key = stack_key if stack_key in stacks else next(iter(stacks))
    grouped: dict[int, list[int]] = {}
    for pos, iid in stacks[key]:
        grouped.setdefault(pos, []).append(iid)
    points = [
        PlotPoint(mm=pos / 1000.0, count=len(ids), instance_ids=tuple(ids))
        for pos, ids in sorted(grouped.items())
    ]
    diffs = [b.mm - a.mm for a, b in itertools.pairwise(points)]
    median = statistics.median(diffs) if diffs else None
    gaps: list[PlotGap] = []
    if median:
        for a, b in itertools.pairwise(points):
            if b.mm - a.mm > 1.5 * median:
                gaps.append(PlotGap(a.mm, b.mm, max(1, round((b.mm - a.mm) / median) - 1)))
    return SlicePlot(key, points, gaps, median)
