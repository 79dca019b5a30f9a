"""Count tables (value -> count) shared by the gap statistics and the stack/series state.

The histograms of :class:`scp.series.gaps.GapStats` and the value counts of the stack and
series state (Spacing Between Slices, Slice Thickness, Pixel Spacing) are plain dicts whose
counts never go negative and never hold a zero.
"""

from __future__ import annotations

from typing import Any

__all__ = ["bump", "value_key"]


def bump(counts: dict[Any, int], key: Any, delta: int) -> None:
    """Add ``delta`` to the count of ``key``, dropping it at zero.

    Raises :class:`ValueError` (``counts`` unchanged) when the count would become negative,
    which for the gap histograms means stale or wrong neighbours.
    """
    value = counts.get(key, 0) + delta
    if value < 0:
        raise ValueError(f"count of {key!r} would become negative: stale or wrong neighbours")
    if value:
        counts[key] = value
    else:
        counts.pop(key, None)


def value_key(value: float) -> float:
    """A length in mm as a count key: rounded to 1e-6 mm."""
    return round(float(value), 6)
