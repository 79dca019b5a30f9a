"""The devices of the fleet (issue 19): which scanner writes bad spacing.

A device is one distinct (calling AE title, Station Name (0008,1010), Manufacturer
(0008,0070), Manufacturer's Model Name (0008,1090), Software Versions (0018,1020)). For each:
instances and series received, last seen, the share of its series flagged per finding code
per day, and -- when at least :data:`PROPOSE_AFTER` series carry evidence of reversed Pixel
Spacing (``PIXEL_SPACING_SUSPECT_REVERSED``, rulebook rule 7) and no configured
``[[swap_rules]]`` entry covers it -- the entry that would correct it, as TOML text for a
person to copy. Nothing here changes the configuration.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from fnmatch import fnmatchcase
from typing import Any

from sqlalchemy.orm import Session

from scp.pipeline.policy import SwapRule
from storage import dashboard
from storage.queries import iso

#: The finding code that is evidence of a reversed Pixel Spacing (rule 7).
REVERSED = "PIXEL_SPACING_SUSPECT_REVERSED"
#: Series with that evidence before a swap rule is proposed.
PROPOSE_AFTER = 2

#: Device columns -> the ``[swap_rules.match]`` key matching them (PS3.3 keywords).
_MATCH_KEYS = {
    "manufacturer": "Manufacturer",
    "manufacturer_model_name": "ManufacturerModelName",
    "station_name": "StationName",
    "calling_ae_title": "calling_ae_title",
}


def list_devices(session: Session, swap_rules: Sequence[SwapRule] = ()) -> list[dict[str, Any]]:
    """Every device (the DEVICE shape, :class:`scp.models.Device`), last seen first."""
    days = dashboard.device_days(session)
    codes = dashboard.device_codes(session)
    out = []
    for total in dashboard.device_totals(session):
        dev = total["device"]
        key = tuple(dev.values())
        per_day = days.get(key, {})
        flagged: list[dict[str, Any]] = [
            {
                "code": code,
                "series": sum(by_day.values()),
                "share": round(sum(by_day.values()) / max(1, total["series"]), 4),
                "by_day": {
                    d: round(n / max(1, per_day.get(d, n)), 4) for d, n in sorted(by_day.items())
                },
            }
            for code, by_day in codes.get(key, {}).items()
        ]
        flagged.sort(key=lambda f: (-f["series"], f["code"]))
        evidence = int(next((c["series"] for c in flagged if c["code"] == REVERSED), 0))
        proposal = None
        if evidence >= PROPOSE_AFTER and not any(_covers(rule, dev) for rule in swap_rules):
            proposal = {"evidence_series": evidence, "toml": swap_rule_toml(dev)}
        out.append(
            {
                **dev,
                "instances": total["instances"],
                "series": total["series"],
                "last_seen": iso(total["last_seen"]),
                "flagged": flagged,
                "swap_rule": proposal,
            }
        )
    out.sort(key=lambda d: d["last_seen"] or "", reverse=True)
    return out


def _covers(rule: SwapRule, dev: dict[str, Any]) -> bool:
    """Whether ``rule`` swaps Pixel Spacing of the device's instances: every key it
    matches on that a device has matches (keys a device does not have -- Modality, SOP
    Class UID -- are taken to match)."""
    if "PixelSpacing" not in rule.attributes or not rule.match:
        return False
    by_key = {key: dev.get(col) or "" for col, key in _MATCH_KEYS.items()}
    return all(
        fnmatchcase(by_key[key].strip(), pattern)
        for key, pattern in rule.match.items()
        if key in by_key
    )


def _glob_literal(value: str) -> str:
    """``value`` as a glob pattern matching only itself (fnmatch: ``[*]``, ``[?]``, ``[[]``)."""
    return "".join(f"[{c}]" if c in "*?[" else c for c in value)


def swap_rule_toml(dev: dict[str, Any]) -> str:
    """The ``[[swap_rules]]`` entry matching exactly this device (header values and the
    calling AE title), swapping Pixel Spacing (0028,0030)."""
    label = dev.get("station_name") or dev.get("manufacturer_model_name") or "device"
    name = f"{label} ({dev['calling_ae_title']}) writes Pixel Spacing column first"
    lines = [
        "[[swap_rules]]",
        f"name = {json.dumps(name)}",
        'attributes = ["PixelSpacing"]',
        "[swap_rules.match]",
    ]
    for col, key in _MATCH_KEYS.items():
        value = dev.get(col)
        if value:
            lines.append(f"{key} = {json.dumps(_glob_literal(str(value).strip()))}")
    return "\n".join(lines) + "\n"
