"""The tables of the configuration: one pydantic model per section, ``[[destinations]]``
and ``[[swap_rules]]`` (:mod:`scp.config` builds them into :class:`scp.config.Config`).

Every model refuses unknown keys; a validator's ``ValueError`` names the key relative to
its table (``url: required``), which :mod:`scp.config` prefixes with the table's place
(``destinations[0].url: required``).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from scp.pipeline.ds import parse_ds
from scp.pipeline.policy import SWAP_MATCH_KEYS, SWAPPABLE_ATTRIBUTES, SwapRule
from scp.pipeline.vr import ae_title_problem


class ConfigError(ValueError):
    """A configuration key or value is wrong; the message names the key."""


#: An integer setting given as text (environment variables, options): ASCII digits.
_INTEGER = re.compile(r" *[+-]?[0-9]+ *")


def integer(text: str) -> int:
    """An integer setting or option given as text: the whole text, ASCII digits with an
    optional sign and spaces around (``int()`` would take ``" 8\n"``, ``"1_000"`` and
    non-ASCII digits).  Raises ``ValueError``."""
    if not _INTEGER.fullmatch(text):
        raise ValueError(f"{text!r} is not an integer")
    return int(text)


def number(text: str) -> float:
    """A number setting or option given as text: a finite decimal as DS writes it (PS3.5
    6.2; ``float()`` would take ``"nan"``, ``"inf"`` and ``"1_0"``).  Raises
    ``ValueError``."""
    value = parse_ds(text)
    if value is None:
        raise ValueError(f"{text!r} is not a number")
    return value


def _whole_number(value: Any, annotation: Any) -> Any:
    """Integer and number settings checked on the whole value before pydantic's lax
    conversion (which would take ``"8\n"``, ``"nan"``, ``8.5`` truncated or ``true``)."""
    if annotation is int:
        if isinstance(value, bool | float):
            raise ValueError(f"{value!r} is not an integer")
        return integer(value) if isinstance(value, str) else value
    if annotation is float:
        if isinstance(value, bool):
            raise ValueError(f"{value!r} is not a number")
        if isinstance(value, str):
            return number(value)
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{value!r} is not a number")
    return value


class _Section(BaseModel):
    """A configuration table: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")

    @field_validator("*", mode="before")
    @classmethod
    def _tables(cls, value: Any, info: Any) -> Any:
        """A table of lists (``calling_ae_hosts``, ``filter``) takes a string for a list of
        one; a level is case-insensitive."""
        field = cls.model_fields.get(info.field_name)
        table = field is not None and getattr(field.annotation, "__origin__", None) is dict
        if table and isinstance(value, Mapping):
            return {k: [v] if isinstance(v, str) else v for k, v in value.items()}
        if info.field_name == "level" and isinstance(value, str):
            return value.upper()
        return _whole_number(value, field.annotation if field is not None else None)


class NodeConfig(_Section):
    ae_title: str = "SPACING_SCP"
    host: str = "0.0.0.0"
    port: int = 11112
    #: Maximum PDU size the node offers to receive (PS3.8 D.1); 0 means unlimited.
    max_pdu_size: int = 262144
    acse_timeout: float = 30.0
    dimse_timeout: float = 120.0
    network_timeout: float = 120.0
    max_associations: int = 32
    #: Accept private and unknown SOP classes as storage (first proposed transfer syntax).
    accept_unknown_sop_classes: bool = True
    #: Largest instance accepted, in bytes; 0 means no limit.
    max_instance_bytes: int = 0
    #: Seconds running associations get to finish after SIGTERM/SIGINT.
    shutdown_grace_s: float = 30.0
    #: Receiving processes accepting from one listening socket; the first also serves
    #: the HTTP API. 1: one process; "auto": one per core, the indexer process counting
    #: as one (see :attr:`receiving_processes`).
    processes: int | Literal["auto"] = 1
    #: How associations wait for network input: "event" (select on the socket, see
    #: scp/net/reactor.py) or "polling" (pynetdicom's stock 1 ms sleep loops).
    reactor: Literal["event", "polling"] = "event"
    #: Where instances are indexed: "process" (the receive path journals each instance
    #: and answers; an indexer beside it, in its own process under ``serve``, indexes in
    #: batches, see scp/services/indexer.py) or "inline" (indexed before the answer).
    indexer: Literal["process", "inline"] = "process"

    @field_validator("processes", mode="before")
    @classmethod
    def _processes(cls, value: Any) -> Any:
        """``"auto"`` (any case) or a whole number."""
        if isinstance(value, str) and value.strip().lower() == "auto":
            return "auto"
        return _whole_number(value, int)

    @property
    def receiving_processes(self) -> int:
        """:attr:`processes` as a number. ``"auto"``: one receiving process per core this
        process may run on, less one for the indexer process (``indexer = "process"``),
        at least 1; 1 when ``port`` is 0 (an ephemeral port cannot be shared)."""
        if self.processes != "auto":
            return self.processes
        if self.port == 0:
            return 1
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 0
        cores = cores or os.cpu_count() or 1
        return max(1, cores - (self.indexer == "process"))


class StorageConfig(_Section):
    data_dir: str = "./spacing-data"
    #: Empty: SQLite file ``index.sqlite3`` inside data_dir.
    database_url: str = ""
    #: Below this much free space (MiB) on the data directory C-STORE answers 0xA700.
    min_free_mb: int = 512


class RetentionConfig(_Section):
    """What the store may delete, and when (``scp.services.retention``, issue 20)."""

    #: Run the retention pass at all (off: the store only grows, as before).
    enabled: bool = False
    #: Instances received more than this many days ago may be deleted (0: as soon as
    #: every destination that routes them confirmed them).
    keep_days: float = 7.0
    #: The same for series with a finding or a corrected instance (flagged or corrected).
    keep_flagged_days: float = 30.0
    #: Watermark: below this much free space (MiB) on the data directory the pass deletes
    #: the oldest deletable studies first, whatever their age; must be above
    #: ``[storage] min_free_mb`` (where C-STORE is refused). 0: off.
    min_free_mb: int = 2048
    #: Watermark: above this many MiB of instance files the pass deletes the oldest
    #: deletable studies first. 0: no limit.
    max_store_mb: int = 0
    #: Delete an instance only once every destination that routes it confirmed it (its
    #: forward job is ``done``); never while a job is pending, in flight or dead.
    only_when_delivered: bool = True
    #: Seconds between two retention passes (at most 30 in production; 1 in tests).
    interval_s: float = 30.0
    #: Seconds an instance is kept at least after its reception, whatever the rules: a
    #: resend still in the ingest journal is never deleted.
    settle_s: float = 10.0
    #: Instances deleted per transaction (each batch is marked, committed, unlinked).
    batch_size: int = 500


class HttpConfig(_Section):
    host: str = "127.0.0.1"
    port: int = 8080
    token: str = ""
    enabled: bool = True


class LoggingConfig(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


class PolicyConfig(_Section):
    on_suspect_reversed: Literal["flag", "swap"] = "flag"
    on_invalid_spacing: Literal["store", "reject"] = "store"
    coercion_status: Literal["warning", "success"] = "warning"
    annotate_private: bool = True


class SeriesConfig(_Section):
    #: A series is ``receiving`` until no instance arrived for this long, then ``settled``.
    quiet_seconds: float = 60.0
    #: Rule 25: gaps within max(rel x median, abs_mm) of the median are uniform.
    uniform_rel_tolerance: float = 0.01
    uniform_abs_tolerance_mm: float = 0.01


class SecurityConfig(_Section):
    #: Calling AE titles allowed to associate; empty: anyone.
    allowed_calling_ae_titles: list[str] = Field(default_factory=list)
    #: Reject associations addressed to another called AE title (A-ASSOCIATE-RJ, reason 7).
    require_called_ae_title: bool = True
    #: Optional host pinning: calling AE title -> list of allowed peer IP addresses/networks.
    calling_ae_hosts: dict[str, list[str]] = Field(default_factory=dict)


class TlsConfig(_Section):
    enabled: bool = False
    cert_file: str = ""
    key_file: str = ""
    ca_file: str = ""
    require_client_cert: bool = False


class ForwardingConfig(_Section):
    """How the forwarder (``scp.services.forwarding``) works through its outbox."""

    #: Seconds a claimed job stays reserved for its worker (renewed while it sends); a job
    #: whose worker hung is taken up again after this (longer than one C-STORE can take).
    #: A node that died is noticed sooner, by its heartbeat (``claimant_timeout_s``).
    lease_s: float = 300.0
    #: Seconds between outbox polls when nothing wakes a worker (jobs due for retry,
    #: jobs queued by ``spacing-scp forward retry/requeue``).
    poll_s: float = 2.0
    #: Jobs sent per association at most.
    batch_size: int = 50
    #: Seconds to wait for the TCP connection to a destination.
    connect_timeout_s: float = 10.0
    #: Identity written to claimed jobs; empty: host name, process id and a random part.
    node_id: str = ""
    #: Seconds between two heartbeats of this node in the outbox's ``forward_nodes`` table.
    heartbeat_s: float = 1.0
    #: Seconds without a heartbeat after which a node counts as dead: the jobs it held
    #: in flight are taken over at once, without waiting for ``lease_s``.
    claimant_timeout_s: float = 5.0
    #: Longest pause, in seconds, between two attempts at a destination that is down
    #: (no association, timeout, abort); the pause grows from its ``retry_initial_s``.
    probe_interval_s: float = 30.0


class QueryConfig(_Section):
    """The C-FIND SCP (``scp.services.find``, PS3.4 C.4.1)."""

    #: Most matches one C-FIND answers; past it the query ends with 0xA700 (Refused:
    #: Out of Resources) after the first ``max_results`` pendings. 0 means no limit.
    max_results: int = 10000
    #: PS3.4 C.2.2.1.2: an entity whose key is empty (unknown) matches any value of it.
    match_unknown: bool = True
    #: Relational queries (PS3.4 C.4.1.2.2) from every requester; false: only from those
    #: that ask in SOP Class Extended Negotiation, others get baseline hierarchical search.
    relational: bool = True


class CommitmentConfig(_Section):
    """The Storage Commitment Push Model SCP (``scp.services.commitment``, PS3.4 J)."""

    #: ``stored``: an instance is committed once stored and indexed; ``forwarded``: also
    #: once every destination that routes it has it (its forward job is ``done``).
    commit_when: Literal["stored", "forwarded"] = "stored"
    #: Seconds between checks of pending requests (and retries of a failed report).
    poll_s: float = 2.0
    #: Seconds between attempts to deliver a report on a new association.
    retry_s: float = 30.0
    #: Attempts to deliver a report before the request is given up (``dead``).
    max_attempts: int = 100
    #: With ``forwarded``: seconds to wait for the destinations; then the instances not
    #: yet forwarded are reported failed (0x0110 processing failure).
    forwarded_wait_s: float = 86400.0

    @field_validator("poll_s", "retry_s", "forwarded_wait_s")
    @classmethod
    def _positive(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("must be greater than 0")
        return value

    @field_validator("max_attempts")
    @classmethod
    def _attempts(cls, value: int) -> int:
        if value < 1:
            raise ValueError("at least 1")
        return value


class Peer(_Section):
    """A remote AE the node connects to: ``[[commitment_peers]]``, ``[[move_destinations]]``."""

    ae_title: str
    host: str
    port: int

    @model_validator(mode="after")
    def _check(self) -> Peer:
        problem = ae_title_problem(self.ae_title)
        if problem is not None:
            raise ValueError(f"ae_title: {self.ae_title!r} is not an AE title: {problem}")
        if not 1 <= self.port <= 65535:
            raise ValueError(f"port: {self.port} is not a TCP port")
        return self


class Destination(_Section):
    """A forwarding destination (``[[destinations]]``).

    ``type = "dimse"`` (the default): a Storage SCP at ``ae_title@host:port`` (C-STORE).
    ``type = "stow-rs"``: a DICOMweb archive at ``url`` (its DICOMweb root, STOW-RS
    ``POST {url}/studies``, PS3.18 10.5), with a bearer ``token`` or basic auth
    (``username``/``password``) and TLS verification (``verify_tls``, ``ca_file``); one
    instance per request, the requests of a batch (``[forwarding] batch_size``) over one
    kept-alive connection.
    """

    name: str
    ae_title: str = ""
    host: str = ""
    port: int = 0
    type: Literal["dimse", "stow-rs"] = "dimse"
    url: str = ""
    token: str = ""
    username: str = ""
    password: str = ""
    verify_tls: bool = True
    ca_file: str = ""
    send: Literal["annotated", "original"] = "annotated"
    max_attempts: int = 20
    retry_initial_s: float = 5.0
    retry_max_s: float = 600.0
    #: Days a job keeps waiting while the destination cannot be reached (no association,
    #: timeout, abort) before it is ``dead``; refusals (failure statuses) count
    #: ``max_attempts`` instead.
    reach_retention_days: float = 7.0
    #: Never send an instance back where it came from: "ae_title" (the calling AE title
    #: equals this destination's AE title), "ae_title_and_host" (and the peer address is
    #: one of the destination host's addresses), "off".
    loop_guard: Literal["ae_title", "ae_title_and_host", "off"] = "ae_title"
    #: All given keys must match: header keywords (Modality, ...), calling_ae_title,
    #: finding_code, worst_severity; each a list of accepted values (globs allowed).
    filter: dict[str, list[str]] = Field(default_factory=dict)
    calling_ae_title: str = ""  # AE title the node uses towards this destination
    #: Ask the destination for Storage Commitment (PS3.4 J) of what it received; with
    #: ``[commitment] commit_when = "forwarded"`` an instance counts as forwarded there
    #: only once the destination has committed to it.
    storage_commitment: bool = False

    @model_validator(mode="after")
    def _check(self) -> Destination:
        """The keys each ``type`` needs and allows; ranges (messages name the key)."""
        given = self.model_fields_set
        stow = self.type == "stow-rs"
        required = ("url",) if stow else ("ae_title", "host", "port")
        for key in required:
            if key not in given:
                raise ValueError(f"{key}: required")
        other = _DIMSE_ONLY if stow else _STOW_ONLY
        for key in sorted(given & other):
            kind = 'not a key of a type = "stow-rs"' if stow else 'only for type = "stow-rs"'
            raise ValueError(f"{key}: {kind} destinations")
        if not self.name.strip():
            raise ValueError("name: must not be empty")
        if stow:
            _check_stow(self)
        else:
            for key in ("ae_title", "calling_ae_title"):
                title = getattr(self, key)
                problem = ae_title_problem(title)
                if problem is not None and (key == "ae_title" or title):
                    raise ValueError(f"{key}: {title!r} is not an AE title: {problem}")
            if not 1 <= self.port <= 65535:
                raise ValueError(f"port: {self.port} is not a TCP port")
        if self.max_attempts < 1:
            raise ValueError("max_attempts: at least 1")
        if self.retry_initial_s <= 0 or self.retry_max_s < self.retry_initial_s:
            raise ValueError("retry_initial_s/retry_max_s: 0 < initial <= max")
        if self.reach_retention_days <= 0:
            raise ValueError("reach_retention_days: must be greater than 0")
        for key, accepted in self.filter.items():
            if key not in _DESTINATION_FILTER_KEYS:
                raise ValueError(
                    f"filter.{key}: unknown key "
                    f"(allowed: {', '.join(sorted(_DESTINATION_FILTER_KEYS))})"
                )
            if key == "worst_severity":
                bad = set(accepted) - {"ok", "info", "warning", "corrected", "invalid"}
                if bad:
                    raise ValueError(f"filter.worst_severity: {sorted(bad)[0]!r} unknown")
        return self


_DIMSE_ONLY = frozenset({"ae_title", "host", "port", "calling_ae_title", "storage_commitment"})
_STOW_ONLY = frozenset({"url", "token", "username", "password", "verify_tls", "ca_file"})


def _check_stow(dest: Destination) -> None:
    """A ``type = "stow-rs"`` destination's own keys."""
    if not dest.url.startswith(("http://", "https://")) or len(dest.url) < 10:
        raise ValueError("url: the archive's DICOMweb root, http(s)://host[:port]/path")
    if dest.token and (dest.username or dest.password):
        raise ValueError("token: a bearer token or username/password, not both")
    if bool(dest.username) != bool(dest.password):
        raise ValueError("username/password: both or neither")


#: The JSON schema of one ``[[swap_rules]]`` table (parsed by :func:`_swap_rule`).
_SWAP_RULE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name", "match"],
    "properties": {
        "name": {"type": "string", "minLength": 1},
        "attributes": {
            "type": "array",
            "items": {"enum": sorted(SWAPPABLE_ATTRIBUTES)},
            "default": ["PixelSpacing"],
        },
        "match": {
            "type": "object",
            "propertyNames": {"enum": sorted(SWAP_MATCH_KEYS)},
            "additionalProperties": {"type": "string"},
        },
        "comma_decimal": {"type": "boolean", "default": False},
    },
}


def _swap_rule(index: int, raw: Any) -> SwapRule:
    where = f"swap_rules[{index}]"
    if not isinstance(raw, Mapping):
        raise ValueError(f"{where} must be a table")
    unknown = set(raw) - {"name", "attributes", "match", "comma_decimal"}
    if unknown:
        raise ValueError(f"{where}.{sorted(unknown)[0]}: unknown key")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise ValueError(f"{where}.name: a non-empty string is required")
    attributes = raw.get("attributes", ["PixelSpacing"])
    if not isinstance(attributes, list) or not attributes:
        raise ValueError(f"{where}.attributes: a non-empty list is required")
    for attr in attributes:
        if attr not in SWAPPABLE_ATTRIBUTES:
            raise ValueError(
                f"{where}.attributes: {attr!r} is not one of {sorted(SWAPPABLE_ATTRIBUTES)}"
            )
    match = raw.get("match", {})
    if not isinstance(match, Mapping) or not match:
        raise ValueError(f"{where}.match: at least one key to match on is required")
    for key, pattern in match.items():
        if key not in SWAP_MATCH_KEYS:
            raise ValueError(
                f"{where}.match.{key}: unknown key (allowed: {', '.join(sorted(SWAP_MATCH_KEYS))})"
            )
        if not isinstance(pattern, str):
            raise ValueError(f"{where}.match.{key}: a glob pattern string is required")
    comma = raw.get("comma_decimal", False)
    if not isinstance(comma, bool):
        raise ValueError(f"{where}.comma_decimal: true or false")
    return SwapRule(name=name, attributes=tuple(attributes), match=dict(match), comma_decimal=comma)


_DESTINATION_FILTER_KEYS = frozenset(
    {
        "Modality",
        "SOPClassUID",
        "Manufacturer",
        "ManufacturerModelName",
        "StationName",
        "calling_ae_title",
        "called_ae_title",
        "finding_code",
        "worst_severity",
    }
)
