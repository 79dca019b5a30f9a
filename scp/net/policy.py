"""Who may associate with the node (``[security]``).

Association acceptance (``[security]``), answered with the A-ASSOCIATE-RJ of
PS3.8 9.3.4 (result / source / reason-diag):

* ``allowed_calling_ae_titles`` (empty: anyone) and ``require_called_ae_title``
  are pynetdicom's own checks (``AE.require_calling_aet``, ``AE.require_called_aet``,
  applied in ``acse._negotiate_as_acceptor``): rejected-permanent (1), DICOM UL
  service-user (1), reason 3 *calling-AE-title-not-recognized* or reason 7
  *called-AE-title-not-recognized*.
* ``calling_ae_hosts`` pins a calling AE title to peer addresses (IPs or CIDR
  networks).  pynetdicom has no hook for it inside the negotiation, but its
  acceptor reactor checks, right after ``EVT_REQUESTED``, whether a handler of that
  event rejected the association (``association.py`` ``run_reactor``: "User used
  EVT_REQUESTED to send an A-ABORT or A-ASSOCIATE-RJ"): :meth:`AssociationPolicy.
  on_requested` rejects there, as pynetdicom itself does (``send_reject``, then
  ``EVT_REJECTED``, then ``kill``), with 1 / 1 / 3: the title is not recognized
  *from that address* (as dcmtk's dcmqrscp answers a host mismatch).
* More associations than ``node.max_associations`` get pynetdicom's transient (2),
  service-provider presentation (3), reason 2 *local-limit-exceeded*.

Every rejection is logged with the peer address (``scp.net.handlers.Handlers.on_rejected``).

The transport protections (timeouts, PDU lengths, TLS handshakes, connection counts)
are in :mod:`scp.net.server`.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pynetdicom import AE, evt

from scp.config import Config, ConfigError, SecurityConfig
from scp.net import compat
from scp.pipeline.vr import ae_title_problem

log = logging.getLogger("spacing_scp.security")

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: A-ASSOCIATE-RJ values (PS3.8 9.3.4, table 9-21).
RESULT_PERMANENT = 1
RESULT_TRANSIENT = 2
SOURCE_SERVICE_USER = 1
SOURCE_SERVICE_PROVIDER_ACSE = 2
SOURCE_SERVICE_PROVIDER_PRESENTATION = 3
REASON_NO_REASON = 1
REASON_CALLING_AE_NOT_RECOGNIZED = 3
REASON_CALLING_AE_NOT_RECOGNIZED_TEXT = "calling-AE-title-not-recognized"
REASON_CALLED_AE_NOT_RECOGNIZED = 7
REASON_LOCAL_LIMIT_EXCEEDED = 2

_RESULTS = {1: "rejected-permanent", 2: "rejected-transient"}
_SOURCES = {
    1: "DICOM UL service-user",
    2: "DICOM UL service-provider (ACSE)",
    3: "DICOM UL service-provider (presentation)",
}
_REASONS = {
    (1, 1): "no-reason-given",
    (1, 2): "application-context-name-not-supported",
    (1, 3): "calling-AE-title-not-recognized",
    (1, 7): "called-AE-title-not-recognized",
    (2, 1): "no-reason-given",
    (2, 2): "protocol-version-not-supported",
    (3, 1): "temporary-congestion",
    (3, 2): "local-limit-exceeded",
}


def describe_rejection(result: int, source: int, reason: int) -> str:
    """``rejected-permanent, DICOM UL service-user, calling-AE-title-not-recognized``."""
    return ", ".join(
        (
            _RESULTS.get(result, f"result {result}"),
            _SOURCES.get(source, f"source {source}"),
            _REASONS.get((source, reason), f"reason {reason}"),
        )
    )


def _peer_ip(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped  # a dual-stack listener sees ::ffff:10.0.0.5
    return ip


def parse_networks(pins: Mapping[str, list[str]]) -> dict[str, tuple[IPNetwork, ...]]:
    """``calling_ae_hosts`` as networks; raises ConfigError naming a bad entry."""
    out: dict[str, tuple[IPNetwork, ...]] = {}
    for title, hosts in pins.items():
        if ae_title_problem(title) is not None:
            raise ConfigError(
                f"security.calling_ae_hosts: {title!r} is not an AE title: "
                f"{ae_title_problem(title)}"
            )
        if not hosts:
            raise ConfigError(f"security.calling_ae_hosts.{title}: at least one address")
        nets = []
        for host in hosts:
            try:
                nets.append(ipaddress.ip_network(host.strip(), strict=False))
            except ValueError:
                raise ConfigError(
                    f"security.calling_ae_hosts.{title}: {host!r} is not an IP address "
                    "or a network (CIDR, e.g. 10.1.2.0/24)"
                ) from None
        out[title.strip()] = tuple(nets)
    return out


@dataclass(frozen=True)
class Rejection:
    """An A-ASSOCIATE-RJ to send (PS3.8 9.3.4) and why."""

    result: int
    source: int
    reason: int
    why: str


class AssociationPolicy:
    """The ``[security]`` section, applied to an AE and its association requests."""

    def __init__(self, security: SecurityConfig, ae_title: str) -> None:
        self.ae_title = ae_title.strip()
        titles = [t for t in security.allowed_calling_ae_titles if t.strip(" ")]
        for title in titles:
            problem = ae_title_problem(title)
            if problem is not None:
                raise ConfigError(
                    f"security.allowed_calling_ae_titles: {title!r} is not an AE title: {problem}"
                )
        self.allowed = tuple(t.strip() for t in titles)
        self.require_called = security.require_called_ae_title
        self.pins = parse_networks(security.calling_ae_hosts)
        if self.allowed:
            unknown = sorted(set(self.pins) - set(self.allowed))
            if unknown:
                raise ConfigError(
                    f"security.calling_ae_hosts.{unknown[0]}: not in "
                    "security.allowed_calling_ae_titles (it could never associate)"
                )

    @classmethod
    def from_config(cls, cfg: Config) -> AssociationPolicy:
        return cls(cfg.security, cfg.node.ae_title)

    # -- the rules, as pure functions (unit tests, and the log) ------------------------------
    def check(self, calling: str, called: str, peer_address: str) -> Rejection | None:
        """The rejection the node answers this request with, or ``None`` to go on.

        The first two rules are enforced by pynetdicom (see :meth:`apply`); they are
        repeated here so that the whole policy can be read and tested in one place.
        """
        calling, called = calling.strip(), called.strip()
        if self.allowed and calling not in self.allowed:
            return Rejection(
                RESULT_PERMANENT,
                SOURCE_SERVICE_USER,
                REASON_CALLING_AE_NOT_RECOGNIZED,
                f"calling AE title {calling!r} is not in security.allowed_calling_ae_titles",
            )
        if self.require_called and called != self.ae_title:
            return Rejection(
                RESULT_PERMANENT,
                SOURCE_SERVICE_USER,
                REASON_CALLED_AE_NOT_RECOGNIZED,
                f"called AE title {called!r} is not the node's {self.ae_title!r}",
            )
        return self.check_host(calling, peer_address)

    def check_host(self, calling: str, peer_address: str) -> Rejection | None:
        """Host pinning: a pinned calling AE title only from its addresses."""
        nets = self.pins.get(calling.strip())
        if nets is None:
            return None
        ip = _peer_ip(peer_address)
        if ip is not None and any(ip.version == n.version and ip in n for n in nets):
            return None
        return Rejection(
            RESULT_PERMANENT,
            SOURCE_SERVICE_USER,
            REASON_CALLING_AE_NOT_RECOGNIZED,
            f"calling AE title {calling.strip()!r} is pinned to "
            f"{', '.join(map(str, nets))}; the request came from {peer_address}",
        )

    # -- pynetdicom ------------------------------------------------------------------------
    def apply(self, ae: AE) -> None:
        """pynetdicom's own checks: reasons 3 and 7 of PS3.8 9.3.4."""
        ae.require_calling_aet = list(self.allowed)
        ae.require_called_aet = self.require_called

    def bindings(self) -> list[tuple[Any, Any]]:
        return [(evt.EVT_REQUESTED, self.on_requested)]

    def on_requested(self, event: Any) -> None:
        """``EVT_REQUESTED``: reject a pinned calling AE from another host."""
        assoc = event.assoc
        primitive = assoc.requestor.primitive
        calling = _text(getattr(primitive, "calling_ae_title", ""))
        peer = assoc.requestor.address_info.address
        rejection = self.check_host(calling, str(peer))
        if rejection is None:
            return
        log.info("association request refused: %s", rejection.why)
        compat.reject_association(assoc, rejection.result, rejection.source, rejection.reason)


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        value = value.decode("ascii", errors="replace")
    return str(value or "").strip()
