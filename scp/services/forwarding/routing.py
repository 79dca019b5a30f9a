"""Which destinations an instance goes to: ``[destinations.filter]`` against the index.

A filter is a table of keys, each with a list of accepted values (glob patterns,
:func:`fnmatch.fnmatchcase`: ``*``, ``?``, ``[...]``; case-sensitive).  An instance
matches when every key of the filter matches; a destination without a filter
receives everything.  Keys:

* header keywords as indexed: ``Modality``, ``SOPClassUID``, ``Manufacturer``,
  ``ManufacturerModelName``, ``StationName`` (a missing value is the empty string,
  matched by ``*`` or ``""`` only);
* ``calling_ae_title``, ``called_ae_title``: the association that brought it;
* ``finding_code``: matches when any of the instance's finding codes matches;
* ``worst_severity``: the instance verdict, its worst finding severity, one of
  ``invalid`` > ``corrected`` > ``warning`` > ``info`` > ``ok``.

The last two are the node's own judgement (the spacing index decides routing):
``worst_severity = ["invalid"]`` on a QA destination and
``worst_severity = ["ok", "info", "warning", "corrected"]`` on the PACS keep
instances with unusable spacing away from the PACS.  Series-level findings
(missing slices...) are not used: they change while a series arrives, and an
instance is routed once, when it is stored.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase

from scp.config import Destination
from storage.index import IndexEntry
from storage.models import Instance

#: Worst first (the instance verdict).
SEVERITY_ORDER: tuple[str, ...] = ("invalid", "corrected", "warning", "info", "ok")

#: Filter keys that name header attributes, and where the index keeps them.
HEADER_KEYS: dict[str, str] = {
    "Modality": "modality",
    "SOPClassUID": "sop_class_uid",
    "Manufacturer": "manufacturer",
    "ManufacturerModelName": "manufacturer_model_name",
    "StationName": "station_name",
}


def worst_severity(severities: Iterable[str]) -> str:
    """The worst of ``severities`` (unknown words ignored); ``ok`` when there is none."""
    present = set(severities)
    for severity in SEVERITY_ORDER:
        if severity in present:
            return severity
    return "ok"


@dataclass(frozen=True)
class RoutingFacts:
    """What a filter can look at, for one instance."""

    header: Mapping[str, str | None] = field(default_factory=dict)
    calling_ae_title: str = ""
    called_ae_title: str = ""
    finding_codes: tuple[str, ...] = ()
    worst_severity: str = "ok"

    def values(self, key: str) -> list[str]:
        if key == "calling_ae_title":
            return [self.calling_ae_title]
        if key == "called_ae_title":
            return [self.called_ae_title]
        if key == "finding_code":
            return list(self.finding_codes)
        if key == "worst_severity":
            return [self.worst_severity]
        return [self.header.get(key) or ""]


def facts_from_entry(entry: IndexEntry) -> RoutingFacts:
    """Facts of an instance being indexed (the ingest path)."""
    header = {kw: entry.series.get(col) for kw, col in HEADER_KEYS.items()}
    header["SOPClassUID"] = entry.sop_class_uid
    return RoutingFacts(
        header=header,
        calling_ae_title=entry.calling_ae_title,
        called_ae_title=entry.called_ae_title,
        finding_codes=tuple(sorted({f.code for f in entry.findings})),
        worst_severity=worst_severity(f.severity for f in entry.findings),
    )


def facts_from_instance(inst: Instance) -> RoutingFacts:
    """Facts of an indexed instance (its row, findings and series)."""
    series = inst.series
    header = {kw: getattr(series, col, None) for kw, col in HEADER_KEYS.items()}
    header["SOPClassUID"] = inst.sop_class_uid
    return RoutingFacts(
        header=header,
        calling_ae_title=inst.calling_ae_title,
        called_ae_title=inst.called_ae_title,
        finding_codes=tuple(sorted({f.code for f in inst.findings})),
        worst_severity=worst_severity(f.severity for f in inst.findings),
    )


def matches(filter_: Mapping[str, Sequence[str]], facts: RoutingFacts) -> bool:
    """True when every key of ``filter_`` accepts one of the instance's values."""
    for key, patterns in filter_.items():
        values = facts.values(key)
        if not any(fnmatchcase(v, p) for v in values for p in patterns):
            return False
    return True


def route(destinations: Iterable[Destination], facts: RoutingFacts) -> list[str]:
    """Names of the destinations whose filter the instance matches, in configuration order."""
    return [d.name for d in destinations if matches(d.filter, facts)]
