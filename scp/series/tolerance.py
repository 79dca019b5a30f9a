"""Tolerances of the per-series geometry (rulebook section G, rule 25 and friends).

Uniform means every gap within ``max(rel x median, abs_mm)`` of the median gap, with
``rel = 0.01`` and ``abs_mm = 0.01`` by default. Published tools use anything from 1e-6 to 20%,
so :class:`Tolerance` makes them configurable; the same tolerance is used for missing slices
(rule 26), runs of different gaps (rule 30) and the Spacing Between Slices and Slice Thickness
cross-checks (rules 24, 29).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DEFAULT_TOLERANCE", "Tolerance"]


@dataclass(frozen=True)
class Tolerance:
    """Configurable tolerances of rulebook section G.

    ``rel`` and ``abs_mm``: rule 25 (uniform spacing), also used by rules 24, 26, 29 and 30.
    ``iop``: rule 21 (same stack) and rule 22 (unit length, orthogonality).
    ``tilt``: rule 28, stacking direction parallel to the normal when ``|dot| >= 1 - tilt``.
    """

    rel: float = 0.01
    abs_mm: float = 0.01
    iop: float = 1e-4
    tilt: float = 1e-3

    def gap_mm(self, median_mm: float) -> float:
        """Rule 25 tolerance around a median gap: ``max(rel x median, abs_mm)``."""
        return max(self.rel * abs(median_mm), self.abs_mm)


DEFAULT_TOLERANCE = Tolerance()
