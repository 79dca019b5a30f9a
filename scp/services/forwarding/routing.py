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

Loop guard (``loop_guard`` of each destination, default ``"ae_title"``): an instance is
never routed to the destination it came from, so a PACS that sends to the node does
not get its own instances back.  ``"ae_title"``: the association's calling AE title
equals the destination's AE title (spaces trimmed, PS3.5 6.2 AE); ``"ae_title_and_host"``:
and the peer address is one of the destination host's addresses (for sites where two
devices share an AE title); ``"off"``: no guard.  ``spacing-scp forward requeue`` is an
operator's explicit request and is not guarded.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from functools import lru_cache

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
    #: ``host:port`` the association came from (``None``: not known, e.g. reindexed).
    peer_address: str | None = None

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
        peer_address=entry.peer_address,
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
        peer_address=inst.peer_address,
    )


def matches(filter_: Mapping[str, Sequence[str]], facts: RoutingFacts) -> bool:
    """True when every key of ``filter_`` accepts one of the instance's values."""
    for key, patterns in filter_.items():
        values = facts.values(key)
        if not any(fnmatchcase(v, p) for v in values for p in patterns):
            return False
    return True


@lru_cache(maxsize=256)
def _addresses(host: str) -> frozenset[str]:
    """The IP addresses ``host`` resolves to (empty when it does not resolve)."""
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except OSError:
        return frozenset()
    return frozenset(str(ipaddress.ip_address(str(info[4][0]).split("%")[0])) for info in infos)


def _peer_ip(peer_address: str) -> str | None:
    host = peer_address.rsplit(":", 1)[0].strip("[]")
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return None


def loops_back(dest: Destination, facts: RoutingFacts) -> bool:
    """True when sending the instance to ``dest`` would send it back where it came from
    (by the destination's ``loop_guard``)."""
    if dest.loop_guard == "off":
        return False
    if facts.calling_ae_title.strip() != dest.ae_title.strip():
        return False
    if dest.loop_guard == "ae_title" or not facts.peer_address:
        return True
    peer = _peer_ip(facts.peer_address)
    addresses = _addresses(dest.host)
    # Unknown on either side: the AE title decides (a loop is worse than a held copy).
    return peer is None or not addresses or peer in addresses


def route(destinations: Iterable[Destination], facts: RoutingFacts) -> list[str]:
    """Names of the destinations whose filter the instance matches, in configuration
    order, without the destination it came from (:func:`loops_back`)."""
    return [d.name for d in destinations if matches(d.filter, facts) and not loops_back(d, facts)]
