"""Evaluation of one stack: Z spacing and its findings from the gap statistics (rules 24-30).

:func:`evaluate_stack` turns a stack's :class:`scp.series.gaps.GapStats` (and its tilt
extremes and cross-check values) into a :class:`scp.series.reports.StackSummary`; it is shared
by the batch path (:func:`summarize_stack`, from projections) and the incremental one
(:class:`scp.series.stack_state.StackState`). Tolerances: :class:`scp.series.tolerance.Tolerance`.

Decisions where the rulebook is silent
--------------------------------------
* Median of an even number of gaps: the mean of the two middle gaps.
* Missing slices vs variable spacing: a gap that is k x median (k >= 2) is a missing-slice gap
  (rule 26) unless gaps of its cluster (gaps within the tolerance of each other) also occur
  next to each other somewhere in the stack: then it is a run of a different spacing (rule 30)
  and the whole cluster counts as variable spacing. Two adjacent double gaps are thus read as
  variable spacing, not as two missing slices. An isolated gap that is no multiple of the
  median is reported as non-uniform spacing (``SLICE_SPACING_NONUNIFORM``).
* ``uniform`` is literal rule 25: a missing slice makes a stack non-uniform, but it is reported
  as ``SLICE_MISSING``, not as ``SLICE_SPACING_NONUNIFORM``.
* Duplicates (rule 27) are warned about even when they are a clean 4D repeat (the message says
  so and gives the repeat count); one position holding several slices has no Z.
* While the series is receiving, every Z number is marked provisional, and the missing-slice
  and duplicate messages say so (a 4D series is not clean until its last phase arrives).
* For NM a negative Spacing Between Slices (0018,0088) is compared by magnitude.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

from scp.pipeline.compare import agree
from scp.pipeline.model import Severity
from scp.series.codes import (
    SLICE_DUPLICATE_POSITION,
    SLICE_MISSING,
    SLICE_SPACING_NONUNIFORM,
    SLICE_THICKNESS_DIFFERS,
    SLICE_TILT,
    SPACING_BETWEEN_SLICES_MISMATCH,
    SPACING_BETWEEN_SLICES_NEGATIVE,
    TAG_IOP,
    TAG_IPP,
    TAG_SBS,
    TAG_ST,
)
from scp.series.gaps import NEAR_DUPLICATE_UM, GapStats
from scp.series.reports import CountedFinding, StackSummary, counted_finding, format_mm
from scp.series.tolerance import DEFAULT_TOLERANCE, Tolerance
from scp.series.vectors import UM_PER_MM, dot_product, position_um, vector_length

__all__ = ["evaluate_stack", "summarize_stack"]


@dataclass(frozen=True)
class _GapAnalysis:
    median_mm: float
    min_mm: float
    max_mm: float
    uniform: bool
    missing: int
    missing_gaps_mm: tuple[float, ...]
    irregular: int
    clusters_mm: tuple[float, ...]
    run_clusters_mm: tuple[float, ...]


def _kth(items: Sequence[tuple[int, int]], k: int) -> int:
    """The k-th (0-based) value of a multiset given as sorted (value, count) items."""
    seen = 0
    for value, count in items:
        seen += count
        if k < seen:
            return value
    raise IndexError(k)


def _analyse_gaps(stats: GapStats, tolerance: Tolerance) -> _GapAnalysis:
    """Rules 24-26 and 30 from the histograms: O(distinct gaps + distinct pairs)."""
    items = sorted(stats.gaps.items())
    total = sum(c for _, c in items)
    median_um = (_kth(items, (total - 1) // 2) + _kth(items, total // 2)) / 2.0
    median = median_um / UM_PER_MM
    tol = tolerance.gap_mm(median)
    min_mm, max_mm = items[0][0] / UM_PER_MM, items[-1][0] / UM_PER_MM
    uniform = max_mm - median <= tol and median - min_mm <= tol

    # Clusters of distinct gaps (rule 30): a new cluster starts more than tol above the
    # first gap of the current one; each is represented by its most common gap.
    cluster_of: dict[int, int] = {}
    clusters: list[list[tuple[int, int]]] = []
    for gap, count in items:
        if not clusters or (gap - clusters[-1][0][0]) / UM_PER_MM > tol:
            clusters.append([])
        clusters[-1].append((gap, count))
        cluster_of[gap] = len(clusters) - 1
    representatives = tuple(
        max(members, key=lambda gc: (gc[1], -gc[0]))[0] / UM_PER_MM for members in clusters
    )

    def on_median(gap: int) -> bool:
        return abs(gap / UM_PER_MM - median) <= tol

    # A run (rule 30): two adjacent off-median gaps of the same cluster. Gaps of such a
    # cluster are variable spacing, never missing slices, even if they are multiples.
    runs = {
        cluster_of[g1]
        for (g1, g2), _ in stats.pairs.items()
        if cluster_of.get(g1) is not None
        and cluster_of.get(g1) == cluster_of.get(g2)
        and not on_median(g1)
        and not on_median(g2)
    }
    missing = irregular = 0
    missing_gaps: list[float] = []
    for gap, count in items:
        if on_median(gap):
            continue
        gap_mm = gap / UM_PER_MM
        k = round(gap_mm / median) if median > 0 else 0
        if k >= 2 and abs(gap_mm - k * median) <= tol and cluster_of[gap] not in runs:
            missing += (k - 1) * count
            missing_gaps.append(gap_mm)
        else:
            irregular += count
    return _GapAnalysis(
        median_mm=median,
        min_mm=min_mm,
        max_mm=max_mm,
        uniform=uniform,
        missing=missing,
        missing_gaps_mm=tuple(missing_gaps),
        irregular=irregular,
        clusters_mm=representatives,
        run_clusters_mm=tuple(representatives[i] for i in sorted(runs)),
    )


def _tilt_cosine(
    normal: Sequence[float], first_ipp: Sequence[float], last_ipp: Sequence[float]
) -> float | None:
    """``|d . n|`` for the unit stacking direction ``d`` (rule 28), ``None`` if undefined."""
    direction = [b - a for a, b in zip(first_ipp, last_ipp, strict=True)]
    length = vector_length(direction) * vector_length(normal)
    if length == 0.0:
        return None
    return min(1.0, abs(dot_product(direction, normal)) / length)


def evaluate_stack(
    stats: GapStats,
    *,
    normal: Sequence[float] | None = None,
    first_ipp: Sequence[float] | None = None,
    last_ipp: Sequence[float] | None = None,
    spacing_between_slices: float | None = None,
    slice_thickness: float | None = None,
    modality: str = "",
    receiving: bool = False,
    tolerance: Tolerance = DEFAULT_TOLERANCE,
) -> StackSummary:
    """Summary of one stack from its :class:`GapStats` (shared by batch and incremental).

    ``first_ipp``/``last_ipp``: IPP (0020,0032) of the lowest and highest positions (rule 28);
    ``spacing_between_slices`` (0018,0088) and ``slice_thickness`` (0018,0050): the stack's
    values, cross-checked only (rules 24, 29); ``receiving``: the series is still receiving,
    so missing slices and duplicates are provisional (rule 26).
    """
    findings: list[CountedFinding] = []
    n, positions = stats.n, stats.positions
    provisional_note = "; provisional: the series is still receiving (rule 26)" if receiving else ""
    cosine = (
        _tilt_cosine(normal, first_ipp, last_ipp)
        if positions >= 2 and normal is not None and first_ipp is not None and last_ipp is not None
        else None
    )
    tilt = None if cosine is None else math.degrees(math.acos(cosine))
    if cosine is not None and cosine < 1.0 - tolerance.tilt:
        findings.append(
            counted_finding(
                SLICE_TILT,
                Severity.WARNING,
                n,
                f"gantry tilt/sheared: the stacking direction of Image Position (Patient) "
                f"{TAG_IPP} is {tilt:.2f} deg from the normal of Image Orientation (Patient) "
                f"{TAG_IOP} (rule 28); Z spacing is reported along the normal",
                "28",
                TAG_IPP,
            )
        )

    near = stats.near_duplicates
    clean_repeat = near == 0 and len(stats.multiplicity) == 1
    repeats: int | None = next(iter(stats.multiplicity)) if clean_repeat else None
    if n == 0:
        repeats = None
    extra = stats.duplicates + near
    if extra:
        if repeats is not None and positions >= 2:
            detail = (
                f"a clean 4D repeat: {repeats} slices at each of {positions} positions; "
                "Z is computed over the distinct positions"
            )
        elif repeats is not None:
            detail = "all at one position: Z is undefined"
        elif near:
            detail = (
                f"{near} pair(s) of positions less than {NEAR_DUPLICATE_UM + 0.5:g} um apart "
                "but not equal: not a clean 4D repeat, Z is undefined"
            )
        else:
            detail = "not a clean 4D repeat (different counts per position): Z is undefined"
        findings.append(
            counted_finding(
                SLICE_DUPLICATE_POSITION,
                Severity.WARNING,
                extra,
                f"{extra} slice(s) share a position along the normal with another slice "
                f"(Image Position (Patient) {TAG_IPP}, within {NEAR_DUPLICATE_UM + 0.5:g} um): "
                f"{detail} (rule 27){provisional_note}",
                "27",
                TAG_IPP,
            )
        )

    base = StackSummary(
        slices=n,
        positions=positions,
        tilt_degrees=tilt,
        provisional=receiving,
        repeats=repeats,
        slice_thickness_mm=slice_thickness,
        spacing_between_slices_mm=spacing_between_slices,
    )
    sbs_negative = (
        spacing_between_slices is not None
        and spacing_between_slices < 0
        and modality.upper() != "NM"
    )
    if sbs_negative:
        findings.append(
            counted_finding(
                SPACING_BETWEEN_SLICES_NEGATIVE,
                Severity.WARNING,
                n,
                f"Spacing Between Slices {TAG_SBS} is negative "
                f"({format_mm(spacing_between_slices or 0)} mm); only NM may use a negative "
                "value (rule 24)",
                "24",
                TAG_SBS,
            )
        )
    if positions < 2 or repeats is None:
        return replace(base, findings=tuple(findings))

    gaps = _analyse_gaps(stats, tolerance)
    z = gaps.median_mm
    tol = tolerance.gap_mm(z)
    if gaps.missing:
        findings.append(
            counted_finding(
                SLICE_MISSING,
                Severity.WARNING,
                gaps.missing,
                f"{gaps.missing} slice(s) missing: gap(s) of "
                f"{', '.join(format_mm(g) for g in gaps.missing_gaps_mm)} mm are whole "
                f"multiples of the median {format_mm(z)} mm within {format_mm(tol)} mm "
                f"(rule 26, Image Position (Patient) {TAG_IPP}){provisional_note}",
                "26",
                TAG_IPP,
            )
        )
    if gaps.irregular:
        runs = (
            f"; runs of {', '.join(format_mm(g) for g in gaps.run_clusters_mm)} mm"
            if gaps.run_clusters_mm
            else ""
        )
        findings.append(
            counted_finding(
                SLICE_SPACING_NONUNIFORM,
                Severity.WARNING,
                gaps.irregular,
                f"variable slice spacing: {gaps.irregular} gap(s) differ from the median "
                f"{format_mm(z)} mm by more than {format_mm(tol)} mm (rule 25); distinct gaps "
                f"{', '.join(format_mm(g) for g in gaps.clusters_mm)} mm{runs} (rule 30, Image "
                f"Position (Patient) {TAG_IPP})",
                "30",
                TAG_IPP,
            )
        )
    if spacing_between_slices is not None and spacing_between_slices != 0 and not sbs_negative:
        sbs = abs(spacing_between_slices)
        # rule 31's comparison, with rule 25's tolerance (tol mm) as its relative tolerance
        if not agree(sbs, z, tol / max(sbs, z)):
            findings.append(
                counted_finding(
                    SPACING_BETWEEN_SLICES_MISMATCH,
                    Severity.WARNING,
                    n,
                    f"Spacing Between Slices {TAG_SBS} {format_mm(spacing_between_slices)} mm "
                    f"disagrees with the spacing of Image Position (Patient) {TAG_IPP} "
                    f"{format_mm(z)} mm by more than {format_mm(tol)} mm (rules 24, 25); "
                    "IPP is used",
                    "24",
                    TAG_SBS,
                )
            )
    if slice_thickness is not None and slice_thickness > 0 and abs(slice_thickness - z) > tol:
        kind = "overlapping slices" if slice_thickness > z else "gaps between slices"
        findings.append(
            counted_finding(
                SLICE_THICKNESS_DIFFERS,
                Severity.INFO,
                n,
                f"Slice Thickness {TAG_ST} {format_mm(slice_thickness)} mm differs from the slice "
                f"spacing {format_mm(z)} mm ({kind}); thickness is not spacing (rule 29)",
                "29",
                TAG_ST,
            )
        )
    return replace(
        base,
        spacing_mm=z,
        min_mm=gaps.min_mm,
        max_mm=gaps.max_mm,
        uniform=gaps.uniform,
        missing_slices=gaps.missing,
        distinct_gaps_mm=gaps.clusters_mm,
        findings=tuple(findings),
    )


def summarize_stack(
    projections: Sequence[float],
    ipps: Sequence[Sequence[float]] | None = None,
    *,
    normal: Sequence[float] | None = None,
    spacing_between_slices: float | None = None,
    slice_thickness: float | None = None,
    modality: str = "",
    receiving: bool = False,
    tolerance: Tolerance = DEFAULT_TOLERANCE,
) -> StackSummary:
    """Batch summary of one stack from the projections of its slices (rules 23-30).

    ``projections``: IPP . n per slice (mm, any order, see :func:`project`); ``ipps``: the
    IPPs (0020,0032) of the same slices, in the same order, used with ``normal`` for the tilt
    check (rule 28). Gives the same results as :class:`GapStats` updated one slice at a time.
    """
    keys = [position_um(p) for p in projections]
    stats = GapStats.from_positions(keys)
    first_ipp = last_ipp = None
    if ipps is not None and keys:
        if len(ipps) != len(keys):
            raise ValueError("ipps and projections differ in length")
        first_ipp = tuple(ipps[min(range(len(keys)), key=keys.__getitem__)])
        last_ipp = tuple(ipps[max(range(len(keys)), key=keys.__getitem__)])
    return evaluate_stack(
        stats,
        normal=normal,
        first_ipp=first_ipp,
        last_ipp=last_ipp,
        spacing_between_slices=spacing_between_slices,
        slice_thickness=slice_thickness,
        modality=modality,
        receiving=receiving,
        tolerance=tolerance,
    )
