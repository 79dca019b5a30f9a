"""DEVICE: one sending device of the fleet (``GET /devices``, the web page's devices page)."""

from __future__ import annotations

from pydantic import Field

from scp.models.base import IsoDateTime, ResponseModel


class CodeShare(ResponseModel):
    """How often one finding code occurred in a device's series, per UTC day."""

    code: str = Field(description="finding code, e.g. PIXEL_SPACING_SUSPECT_REVERSED")
    series: int = Field(description="series of the device carrying the code, all days")
    share: float = Field(description="series carrying it / series of the device, 0..1")
    by_day: dict[str, float] = Field(
        description="share per day of first reception (YYYY-MM-DD, UTC), days with series only"
    )


class SwapRuleProposal(ResponseModel):
    """A ``[[swap_rules]]`` entry that would correct the device (never applied by itself)."""

    evidence_series: int = Field(
        description="series of the device with evidence of reversed Pixel Spacing (0028,0030) "
        "(PIXEL_SPACING_SUSPECT_REVERSED, rule 7)"
    )
    toml: str = Field(description="the entry, to copy into the configuration")


class Device(ResponseModel):
    """One device: a distinct (calling AE title, Station Name, Manufacturer, Manufacturer's
    Model Name, Software Versions)."""

    calling_ae_title: str = Field(description="calling AE title of the association")
    station_name: str | None = Field(description="Station Name (0008,1010)")
    manufacturer: str | None = Field(description="Manufacturer (0008,0070)")
    manufacturer_model_name: str | None = Field(description="Manufacturer's Model Name (0008,1090)")
    software_versions: str | None = Field(description="Software Versions (0018,1020)")
    instances: int = Field(description="instances received from the device")
    series: int = Field(description="series received from the device")
    last_seen: IsoDateTime | None = Field(description="last reception, UTC")
    flagged: list[CodeShare] = Field(description="only codes that occurred, most frequent first")
    swap_rule: SwapRuleProposal | None = Field(
        description="proposed when at least two series carry evidence of reversed spacing and "
        "no configured swap rule covers the device"
    )


class DevicePage(ResponseModel):
    """``GET /devices``: every device, most recently seen first."""

    items: list[Device]
