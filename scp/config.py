"""Configuration: embedded defaults, a TOML file, environment variables, options.

Precedence (last wins): defaults < ``--config FILE`` < ``SPACING_SCP_<SECTION>_<KEY>``
environment variables < command-line options.  Relative paths resolve against
the configuration file's folder (the working directory when there is none),
never against the package.  A wrong key or value raises :class:`ConfigError`
naming the key.  ``config/spacing-scp.toml`` documents every key.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

from scp.pipeline.policy import SWAP_MATCH_KEYS, SWAPPABLE_ATTRIBUTES, SpacingPolicy, SwapRule
from scp.series import Tolerance

ENV_PREFIX = "SPACING_SCP_"


class ConfigError(ValueError):
    """A configuration key or value is wrong; the message names the key."""


@dataclass
class NodeConfig:
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
    #: the HTTP API and the forwarding workers. 1: one process.
    processes: int = 1
    #: How associations wait for network input: "event" (select on the socket, see
    #: scp/net/reactor.py) or "polling" (pynetdicom's stock 1 ms sleep loops).
    reactor: Literal["event", "polling"] = "event"
    #: Where instances are indexed: "process" (the receive path journals each instance
    #: and answers; an indexer beside it, in its own process under ``serve``, indexes in
    #: batches, see scp/services/indexer.py) or "inline" (indexed before the answer).
    indexer: Literal["process", "inline"] = "process"


@dataclass
class StorageConfig:
    data_dir: str = "./spacing-data"
    #: Empty: SQLite file ``index.sqlite3`` inside data_dir.
    database_url: str = ""
    #: Below this much free space (MiB) on the data directory C-STORE answers 0xA700.
    min_free_mb: int = 512


@dataclass
class HttpConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    token: str = ""
    enabled: bool = True


@dataclass
class LoggingConfig:
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


@dataclass
class PolicyConfig:
    on_suspect_reversed: Literal["flag", "swap"] = "flag"
    on_invalid_spacing: Literal["store", "reject"] = "store"
    coercion_status: Literal["warning", "success"] = "warning"
    annotate_private: bool = True


@dataclass
class SeriesConfig:
    #: A series is ``receiving`` until no instance arrived for this long, then ``settled``.
    quiet_seconds: float = 60.0
    #: Rule 25: gaps within max(rel x median, abs_mm) of the median are uniform.
    uniform_rel_tolerance: float = 0.01
    uniform_abs_tolerance_mm: float = 0.01


@dataclass
class SecurityConfig:
    #: Calling AE titles allowed to associate; empty: anyone.
    allowed_calling_ae_titles: list[str] = field(default_factory=list)
    #: Reject associations addressed to another called AE title (A-ASSOCIATE-RJ, reason 7).
    require_called_ae_title: bool = True
    #: Optional host pinning: calling AE title -> list of allowed peer IP addresses/networks.
    calling_ae_hosts: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class TlsConfig:
    enabled: bool = False
    cert_file: str = ""
    key_file: str = ""
    ca_file: str = ""
    require_client_cert: bool = False


@dataclass
class ForwardingConfig:
    """How the forwarder (``scp.services.forwarding``) works through its outbox."""

    #: Seconds a claimed job stays reserved for its worker; a job whose node died
    #: mid-send is taken up again after this (longer than one C-STORE can take).
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


@dataclass
class QueryConfig:
    """The C-FIND SCP (``scp.services.find``, PS3.4 C.4.1)."""

    #: Most matches one C-FIND answers; past it the query ends with 0xA700 (Refused:
    #: Out of Resources) after the first ``max_results`` pendings. 0 means no limit.
    max_results: int = 10000
    #: PS3.4 C.2.2.1.2: an entity whose key is empty (unknown) matches any value of it.
    match_unknown: bool = True


@dataclass
class Destination:
    """A forwarding destination (``[[destinations]]``)."""

    name: str
    ae_title: str
    host: str
    port: int
    send: Literal["annotated", "original"] = "annotated"
    max_attempts: int = 20
    retry_initial_s: float = 5.0
    retry_max_s: float = 600.0
    #: All given keys must match: header keywords (Modality, ...), calling_ae_title,
    #: finding_code, worst_severity; each a list of accepted values (globs allowed).
    filter: dict[str, list[str]] = field(default_factory=dict)
    calling_ae_title: str = ""  # AE title the node uses towards this destination


@dataclass
class Config:
    node: NodeConfig = field(default_factory=NodeConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    series: SeriesConfig = field(default_factory=SeriesConfig)
    security: SecurityConfig = field(default_factory=SecurityConfig)
    tls: TlsConfig = field(default_factory=TlsConfig)
    query: QueryConfig = field(default_factory=QueryConfig)
    forwarding: ForwardingConfig = field(default_factory=ForwardingConfig)
    destinations: list[Destination] = field(default_factory=list)
    swap_rules: list[SwapRule] = field(default_factory=list)
    #: Folder relative paths resolve against.
    base_dir: Path = field(default_factory=Path.cwd)
    source: str = "embedded defaults"

    # -- derived -----------------------------------------------------------------------
    @property
    def data_dir(self) -> Path:
        path = Path(self.storage.data_dir).expanduser()
        return path if path.is_absolute() else (self.base_dir / path).resolve()

    @property
    def database_url(self) -> str:
        if self.storage.database_url:
            return self.storage.database_url
        return f"sqlite:///{self.data_dir / 'index.sqlite3'}"

    @property
    def tolerance(self) -> Tolerance:
        return Tolerance(
            rel=self.series.uniform_rel_tolerance, abs_mm=self.series.uniform_abs_tolerance_mm
        )

    @property
    def spacing_policy(self) -> SpacingPolicy:
        return SpacingPolicy(
            swap_rules=tuple(self.swap_rules),
            on_suspect_reversed=self.policy.on_suspect_reversed,
            on_invalid_spacing=self.policy.on_invalid_spacing,
            coercion_status=self.policy.coercion_status,
            annotate_private=self.policy.annotate_private,
        )

    def effective(self) -> dict[str, Any]:
        """The effective configuration, secrets masked (logged at start)."""
        out: dict[str, Any] = {}
        for name in _SECTIONS:
            section = dataclasses.asdict(getattr(self, name))
            if name == "http" and section.get("token"):
                section["token"] = "***"
            out[name] = section
        out["storage"]["data_dir"] = str(self.data_dir)
        url = self.database_url
        if "@" in url:
            scheme, rest = url.split("://", 1)
            url = f"{scheme}://***@{rest.split('@', 1)[1]}"
        out["storage"]["database_url"] = url
        out["swap_rules"] = [rule.name for rule in self.swap_rules]
        out["destinations"] = [
            f"{d.name}={d.ae_title}@{d.host}:{d.port}" for d in self.destinations
        ]
        return out


_SECTIONS: dict[str, type] = {
    "node": NodeConfig,
    "storage": StorageConfig,
    "http": HttpConfig,
    "logging": LoggingConfig,
    "policy": PolicyConfig,
    "series": SeriesConfig,
    "security": SecurityConfig,
    "tls": TlsConfig,
    "query": QueryConfig,
    "forwarding": ForwardingConfig,
}


def _coerce(key: str, value: Any, annotation: Any) -> Any:
    """Check/convert ``value`` for a field annotated ``annotation``."""
    origin = get_origin(annotation)
    if origin is Literal:
        allowed = get_args(annotation)
        if isinstance(value, str) and key.endswith(".level"):
            value = value.upper()
        if value not in allowed:
            raise ConfigError(f"{key}: {value!r} is not one of {', '.join(map(repr, allowed))}")
        return value
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in {"true", "1", "yes", "on"}:
            return True
        if isinstance(value, str) and value.lower() in {"false", "0", "no", "off"}:
            return False
        raise ConfigError(f"{key}: {value!r} is not a boolean (true/false)")
    if annotation is int:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: {value!r} is not an integer")
        try:
            return int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}: {value!r} is not an integer") from None
    if annotation is float:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: {value!r} is not a number")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}: {value!r} is not a number") from None
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: {value!r} is not a string")
        return value
    if origin is list:
        if isinstance(value, str):  # environment variables: comma-separated
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{key}: a list of strings is expected")
        return list(value)
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: a table is expected")
        out: dict[str, list[str]] = {}
        for k, v in value.items():
            v = [v] if isinstance(v, str) else v
            if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
                raise ConfigError(f"{key}.{k}: a string or a list of strings is expected")
            out[str(k)] = list(v)
        return out
    raise ConfigError(f"{key}: unsupported setting")  # pragma: no cover


def _apply_section(obj: Any, section: str, values: Mapping[str, Any]) -> None:
    if not isinstance(values, Mapping):
        raise ConfigError(f"[{section}] must be a table")
    hints = get_type_hints(type(obj))
    known = {f.name for f in dataclasses.fields(obj)}
    for key, value in values.items():
        if key not in known:
            raise ConfigError(f"{section}.{key}: unknown key (known: {', '.join(sorted(known))})")
        setattr(obj, key, _coerce(f"{section}.{key}", value, hints[key]))


def _swap_rule(index: int, raw: Any) -> SwapRule:
    where = f"swap_rules[{index}]"
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where} must be a table")
    unknown = set(raw) - {"name", "attributes", "match", "comma_decimal"}
    if unknown:
        raise ConfigError(f"{where}.{sorted(unknown)[0]}: unknown key")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{where}.name: a non-empty string is required")
    attributes = raw.get("attributes", ["PixelSpacing"])
    if not isinstance(attributes, list) or not attributes:
        raise ConfigError(f"{where}.attributes: a non-empty list is required")
    for attr in attributes:
        if attr not in SWAPPABLE_ATTRIBUTES:
            raise ConfigError(
                f"{where}.attributes: {attr!r} is not one of {sorted(SWAPPABLE_ATTRIBUTES)}"
            )
    match = raw.get("match", {})
    if not isinstance(match, Mapping) or not match:
        raise ConfigError(f"{where}.match: at least one key to match on is required")
    for key, pattern in match.items():
        if key not in SWAP_MATCH_KEYS:
            raise ConfigError(
                f"{where}.match.{key}: unknown key (allowed: {', '.join(sorted(SWAP_MATCH_KEYS))})"
            )
        if not isinstance(pattern, str):
            raise ConfigError(f"{where}.match.{key}: a glob pattern string is required")
    comma = raw.get("comma_decimal", False)
    if not isinstance(comma, bool):
        raise ConfigError(f"{where}.comma_decimal: true or false")
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


def _destination(index: int, raw: Any) -> Destination:
    where = f"destinations[{index}]"
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where} must be a table")
    hints = get_type_hints(Destination)
    known = {f.name for f in dataclasses.fields(Destination)}
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in known:
            raise ConfigError(f"{where}.{key}: unknown key (known: {', '.join(sorted(known))})")
        values[key] = _coerce(f"{where}.{key}", value, hints[key])
    for required in ("name", "ae_title", "host", "port"):
        if required not in values:
            raise ConfigError(f"{where}.{required}: required")
    dest = Destination(**values)
    if not dest.name.strip():
        raise ConfigError(f"{where}.name: must not be empty")
    if not (1 <= len(dest.ae_title) <= 16) or "\\" in dest.ae_title:
        raise ConfigError(f"{where}.ae_title: 1 to 16 characters, no backslash")
    if not 1 <= dest.port <= 65535:
        raise ConfigError(f"{where}.port: {dest.port} is not a TCP port")
    if dest.max_attempts < 1:
        raise ConfigError(f"{where}.max_attempts: at least 1")
    if dest.retry_initial_s <= 0 or dest.retry_max_s < dest.retry_initial_s:
        raise ConfigError(f"{where}.retry_initial_s/retry_max_s: 0 < initial <= max")
    for key, accepted in dest.filter.items():
        if key not in _DESTINATION_FILTER_KEYS:
            raise ConfigError(
                f"{where}.filter.{key}: unknown key "
                f"(allowed: {', '.join(sorted(_DESTINATION_FILTER_KEYS))})"
            )
        if key == "worst_severity":
            bad = set(accepted) - {"ok", "info", "warning", "corrected", "invalid"}
            if bad:
                raise ConfigError(f"{where}.filter.worst_severity: {sorted(bad)[0]!r} unknown")
    return dest


def _validate(cfg: Config) -> None:
    title = cfg.node.ae_title
    if not (1 <= len(title) <= 16) or not title.strip() or "\\" in title:
        raise ConfigError("node.ae_title: 1 to 16 characters, not only spaces, no backslash")
    if any(not (" " <= c < "\x7f") for c in title):
        raise ConfigError("node.ae_title: only printable ASCII characters (PS3.5 6.2 AE)")
    for key, port in (("node.port", cfg.node.port), ("http.port", cfg.http.port)):
        if not 0 <= port <= 65535:
            raise ConfigError(f"{key}: {port} is not a TCP port (0-65535)")
    if cfg.node.max_pdu_size != 0 and not 4096 <= cfg.node.max_pdu_size <= 2**32 - 1:
        raise ConfigError("node.max_pdu_size: 0 (unlimited) or 4096 to 4294967295")
    for key in ("acse_timeout", "dimse_timeout", "network_timeout", "shutdown_grace_s"):
        if getattr(cfg.node, key) <= 0:
            raise ConfigError(f"node.{key}: must be greater than 0")
    if cfg.node.reactor not in ("event", "polling"):
        raise ConfigError('node.reactor: "event" or "polling"')
    if cfg.node.indexer not in ("process", "inline"):
        raise ConfigError('node.indexer: "process" or "inline"')
    if not 1 <= cfg.node.processes <= 64:
        raise ConfigError("node.processes: 1 to 64")
    if cfg.node.processes > 1 and cfg.node.port == 0:
        raise ConfigError("node.processes: several processes need a fixed node.port")
    if cfg.node.max_associations < 1:
        raise ConfigError("node.max_associations: at least 1")
    if cfg.node.max_instance_bytes < 0:
        raise ConfigError("node.max_instance_bytes: 0 (no limit) or more")
    if cfg.storage.min_free_mb < 0:
        raise ConfigError("storage.min_free_mb: 0 or more")
    if cfg.series.quiet_seconds <= 0:
        raise ConfigError("series.quiet_seconds: must be greater than 0")
    if not 0 <= cfg.series.uniform_rel_tolerance < 1:
        raise ConfigError("series.uniform_rel_tolerance: 0 to below 1")
    if cfg.series.uniform_abs_tolerance_mm < 0:
        raise ConfigError("series.uniform_abs_tolerance_mm: 0 or more")
    fwd = cfg.forwarding
    for key in ("lease_s", "poll_s", "connect_timeout_s"):
        if getattr(fwd, key) <= 0:
            raise ConfigError(f"forwarding.{key}: must be greater than 0")
    if not 1 <= fwd.batch_size <= 1000:
        raise ConfigError("forwarding.batch_size: 1 to 1000")
    if cfg.query.max_results < 0:
        raise ConfigError("query.max_results: 0 (no limit) or more")
    if not cfg.storage.data_dir:
        raise ConfigError("storage.data_dir: must not be empty")
    url = cfg.storage.database_url
    if url and not url.startswith(("sqlite:", "postgresql:", "postgresql+psycopg:")):
        raise ConfigError("storage.database_url: sqlite:///PATH or postgresql://... expected")


def load_config(
    path: Path | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Build the configuration.

    ``overrides`` maps ``"section.key"`` to a value (command-line options).
    """
    cfg = Config()
    if path is not None:
        path = Path(path)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"--config: {path} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from None
        cfg.base_dir = path.resolve().parent
        cfg.source = str(path)
        for key, value in data.items():
            if key in _SECTIONS:
                _apply_section(getattr(cfg, key), key, value)
            elif key == "destinations":
                if not isinstance(value, list):
                    raise ConfigError("destinations: use [[destinations]] tables")
                cfg.destinations = [_destination(i, raw) for i, raw in enumerate(value)]
                names = [d.name for d in cfg.destinations]
                if len(set(names)) != len(names):
                    raise ConfigError("destinations: names must be unique")
            elif key == "swap_rules":
                if not isinstance(value, list):
                    raise ConfigError("swap_rules: use [[swap_rules]] tables")
                cfg.swap_rules = [_swap_rule(i, raw) for i, raw in enumerate(value)]
            else:
                raise ConfigError(
                    f"{key}: unknown section "
                    f"(known: {', '.join([*_SECTIONS, 'swap_rules', 'destinations'])})"
                )
    env = os.environ if environ is None else environ
    for name, value in env.items():
        if not name.startswith(ENV_PREFIX):
            continue
        rest = name[len(ENV_PREFIX) :].lower()
        section, _, key = rest.partition("_")
        if section not in _SECTIONS:
            # Not a setting (e.g. the test suite's SPACING_SCP_REQUIRE_DCMTK).
            continue
        if not key:
            raise ConfigError(f"{name}: unknown setting (SPACING_SCP_<SECTION>_<KEY>)")
        try:
            _apply_section(getattr(cfg, section), section, {key: value})
        except ConfigError as exc:
            raise ConfigError(f"{name}: {exc}") from None
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        section, key = dotted.split(".", 1)
        _apply_section(getattr(cfg, section), section, {key: value})
    _validate(cfg)
    return cfg
