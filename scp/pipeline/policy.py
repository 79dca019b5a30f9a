"""Site policy the spacing pipeline applies (the ``[policy]`` and
``[[swap_rules]]`` sections of the configuration)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

#: Keys a swap rule may match on: DICOM keywords of the header plus the
#: association's calling AE title.
SWAP_MATCH_KEYS = frozenset(
    {
        "Manufacturer",
        "ManufacturerModelName",
        "StationName",
        "Modality",
        "SOPClassUID",
        "DeviceSerialNumber",
        "calling_ae_title",
    }
)

SWAPPABLE_ATTRIBUTES = frozenset({"PixelSpacing", "ImagerPixelSpacing"})


@dataclass(frozen=True)
class SwapRule:
    """A device known to write its spacing reversed (rulebook rule 7).

    ``match`` maps keys of :data:`SWAP_MATCH_KEYS` to glob patterns
    (:func:`fnmatch.fnmatchcase`); all given keys must match.
    """

    name: str
    attributes: tuple[str, ...] = ("PixelSpacing",)
    match: dict[str, str] = field(default_factory=dict)
    comma_decimal: bool = False  # rule 1: this device writes "0,5" for 0.5


@dataclass(frozen=True)
class SpacingPolicy:
    """What the node does with what it finds."""

    swap_rules: tuple[SwapRule, ...] = ()
    on_suspect_reversed: Literal["flag", "swap"] = "flag"
    on_invalid_spacing: Literal["store", "reject"] = "store"
    coercion_status: Literal["warning", "success"] = "warning"
    annotate_private: bool = True
    # rule 8: plausible in-plane range per modality, mm
    plausible_range_mm: dict[str, tuple[float, float]] = field(
        default_factory=lambda: {"CT": (0.05, 5.0), "MR": (0.05, 5.0)}
    )
