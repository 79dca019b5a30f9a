"""The SERIES representation, composed the same way for the index and for ``check``.

A series received over the network (:mod:`storage.queries`) and a folder on disk
(:mod:`scp.services.check`) get the same answer because both end here.
"""

from __future__ import annotations

from typing import Any

from scp.series.reports import StackSummary


def empty_slice_spacing(provisional: bool) -> dict[str, Any]:
    """``slice_spacing`` of a series without plane geometry: the keys of a stack's
    (:meth:`StackSummary.slice_spacing_dict`), every value undefined (rule 29)."""
    return StackSummary(0, 0, provisional=provisional).slice_spacing_dict()


def compose_series(
    *,
    fields: dict[str, Any],
    state: str,
    geometry: dict[str, Any] | None,
    instance_findings: list[dict[str, Any]],
    spacing: tuple[float | None, float | None, str | None] | None,
    spacing_consistent: bool,
) -> dict[str, Any]:
    """SERIES: identity ``fields`` + in-plane consensus + Z geometry + findings.

    ``geometry`` is :meth:`scp.series.SeriesGeometry.to_dict` (``None`` when no instance
    has a usable Image Plane); ``instance_findings`` are the per-instance findings
    aggregated by code and severity (``{code, severity, count, message}``); ``spacing`` is
    the most common effective in-plane spacing of the instances and its source.
    """
    row_mm, col_mm, source = spacing or (None, None, None)
    pixel_spacing = {
        "row_mm": row_mm,
        "column_mm": col_mm,
        "source": source,
        "consistent": spacing_consistent,
    }
    slice_spacing = empty_slice_spacing(state == "receiving")
    findings = list(instance_findings)
    st = sbs = None
    stacks: list[dict[str, Any]] = []
    if geometry is not None:
        slice_spacing = geometry["slice_spacing"]
        st = geometry["slice_thickness_mm"]
        sbs = geometry["spacing_between_slices_mm"]
        stacks = geometry["stacks"]
        pixel_spacing["consistent"] = bool(
            geometry["pixel_spacing"]["consistent"] and spacing_consistent
        )
        findings = geometry["findings"] + findings
    return {
        **fields,
        "state": state,
        "pixel_spacing": pixel_spacing,
        "slice_spacing": slice_spacing,
        "slice_thickness_mm": st,
        "spacing_between_slices_mm": sbs,
        "stacks": stacks,
        "findings": findings,
    }
