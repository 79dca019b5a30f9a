"""Configuration: embedded defaults, a TOML file, environment variables, options.

Built with pydantic-settings: every section is a pydantic model that refuses unknown
keys, and :class:`Config` is a ``BaseSettings`` whose sources are, last wins: embedded
defaults < ``--config FILE`` (TOML) < ``SPACING_SCP_<SECTION>_<KEY>`` environment
variables < command-line options. Every key has its variable: scalars as text, lists
comma-separated or JSON, tables as JSON (``SPACING_SCP_SECURITY_CALLING_AE_HOSTS=
'{"CT1": ["10.0.0.0/24"]}'``, ``SPACING_SCP_DESTINATIONS='[{"name": ...}]'``).
Relative paths resolve against the configuration file's folder (the working directory
when there is none), never against the package. A wrong key or value raises
:class:`ConfigError`, one line naming the key (and the variable it came from).
``config/spacing-scp.toml`` documents every key; ``docs/config.schema.json`` is the JSON
schema (``python -m scp.config schema``).
"""

from __future__ import annotations

import json
import os
import re
import sys
import tomllib
from collections.abc import Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from pydantic import (
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)
from pydantic_settings.sources.utils import parse_env_vars

from scp.config_tables import (
    _SWAP_RULE_SCHEMA,
    CommitmentConfig,
    ConfigError,
    Destination,
    ForwardingConfig,
    HttpConfig,
    LoggingConfig,
    NodeConfig,
    Peer,
    PolicyConfig,
    QueryConfig,
    RetentionConfig,
    SecurityConfig,
    SeriesConfig,
    StorageConfig,
    TlsConfig,
    _Section,
    _swap_rule,
    integer,
    number,
)
from scp.pipeline.policy import SpacingPolicy, SwapRule
from scp.pipeline.vr import ae_title_problem
from scp.series import Tolerance

ENV_PREFIX = "SPACING_SCP_"


#: (environment, TOML data) of the :func:`load_config` call building a :class:`Config`.
_SOURCES: ContextVar[tuple[Mapping[str, str], dict[str, Any]]] = ContextVar(
    "config_sources", default=({}, {})
)


class _Environment(EnvSettingsSource):
    """``SPACING_SCP_<SECTION>_<KEY>`` from the given mapping; lists also comma-separated."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        self._environ = environ
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return parse_env_vars(self._environ, False, False, None)

    def decode_complex_value(self, field_name: str, field: FieldInfo, value: Any) -> Any:
        try:
            return super().decode_complex_value(field_name, field, value)
        except ValueError:
            annotation = getattr(field, "annotation", None)
            if isinstance(value, str) and getattr(annotation, "__origin__", None) is list:
                return [v.strip() for v in value.split(",") if v.strip()]
            raise ValueError(f"{field_name.upper()}: {value!r} is not JSON") from None


class _Toml(PydanticBaseSettingsSource):
    """The ``--config`` file's tables, as read by :func:`load_config`."""

    def __init__(self, settings_cls: type[BaseSettings], data: dict[str, Any]) -> None:
        super().__init__(settings_cls)
        self._data = data

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self._data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self._data)


class Config(BaseSettings):
    """The node's configuration (``config/spacing-scp.toml`` documents every key)."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="_",
        env_nested_max_split=1,
        case_sensitive=False,
        extra="forbid",
    )

    node: NodeConfig = Field(default_factory=NodeConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)
    http: HttpConfig = Field(default_factory=HttpConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    policy: PolicyConfig = Field(default_factory=PolicyConfig)
    series: SeriesConfig = Field(default_factory=SeriesConfig)
    security: SecurityConfig = Field(default_factory=SecurityConfig)
    tls: TlsConfig = Field(default_factory=TlsConfig)
    query: QueryConfig = Field(default_factory=QueryConfig)
    forwarding: ForwardingConfig = Field(default_factory=ForwardingConfig)
    commitment: CommitmentConfig = Field(default_factory=CommitmentConfig)
    retention: RetentionConfig = Field(default_factory=RetentionConfig)
    #: ``[[destinations]]``: where instances are forwarded.
    destinations: list[Destination] = Field(default_factory=list)
    #: ``[[commitment_peers]]``: where Storage Commitment reports go on a new association,
    #: by AE title (PS3.4 J.3.3).
    commitment_peers: list[Peer] = Field(default_factory=list)
    #: ``[[move_destinations]]``: where C-MOVE may send, by AE title (PS3.4 C.4.2); others
    #: get 0xA801.
    move_destinations: list[Peer] = Field(default_factory=list)
    #: ``[[swap_rules]]``: devices known to write Pixel Spacing reversed (rule 7).
    swap_rules: list[SwapRule] = Field(
        default_factory=list, json_schema_extra={"items": _SWAP_RULE_SCHEMA}
    )
    _base_dir: Path = PrivateAttr(default_factory=Path.cwd)
    _source: str = PrivateAttr(default="embedded defaults")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        environ, toml = _SOURCES.get()
        return (init_settings, _Environment(settings_cls, environ), _Toml(settings_cls, toml))

    @field_validator("destinations", mode="before")
    @classmethod
    def _destination_tables(cls, value: Any) -> Any:
        if not isinstance(value, list):
            raise ValueError("use [[destinations]] tables")
        return value

    @field_validator("destinations", mode="after")
    @classmethod
    def _unique_names(cls, value: list[Destination]) -> list[Destination]:
        names = [d.name for d in value]
        if len(set(names)) != len(names):
            raise ValueError("names must be unique")
        return value

    @field_validator("commitment_peers", "move_destinations", mode="before")
    @classmethod
    def _peer_tables(cls, value: Any, info: Any) -> Any:
        if not isinstance(value, list):
            raise ValueError(f"use [[{info.field_name}]] tables")
        return value

    @field_validator("commitment_peers", "move_destinations", mode="after")
    @classmethod
    def _unique_titles(cls, value: list[Peer]) -> list[Peer]:
        titles = [p.ae_title.strip() for p in value]
        if len(set(titles)) != len(titles):
            raise ValueError("AE titles must be unique")
        return value

    @field_validator("swap_rules", mode="before")
    @classmethod
    def _swap_rules(cls, value: Any) -> Any:
        if not isinstance(value, list):
            raise ValueError("use [[swap_rules]] tables")
        return [r if isinstance(r, SwapRule) else _swap_rule(i, r) for i, r in enumerate(value)]

    # -- where it came from --------------------------------------------------------------
    @property
    def base_dir(self) -> Path:
        """Folder relative paths resolve against."""
        return self._base_dir

    @base_dir.setter
    def base_dir(self, value: Path) -> None:
        self._base_dir = value

    @property
    def source(self) -> str:
        return self._source

    @source.setter
    def source(self, value: str) -> None:
        self._source = value

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
            section = getattr(self, name).model_dump()
            if name == "http" and section.get("token"):
                section["token"] = "***"
            out[name] = section
        out["storage"]["data_dir"] = str(self.data_dir)
        if self.node.processes == "auto":  # and what it came to on this machine
            out["node"]["processes"] = f"auto ({self.node.receiving_processes})"
        url = self.database_url
        if "@" in url:
            scheme, rest = url.split("://", 1)
            url = f"{scheme}://***@{rest.split('@', 1)[1]}"
        out["storage"]["database_url"] = url
        out["swap_rules"] = [rule.name for rule in self.swap_rules]
        out["destinations"] = [
            f"{d.name}={d.url}"
            if d.type == "stow-rs"
            else f"{d.name}={d.ae_title}@{d.host}:{d.port}"
            for d in self.destinations
        ]
        for name in ("commitment_peers", "move_destinations"):
            out[name] = [f"{p.ae_title}@{p.host}:{p.port}" for p in getattr(self, name)]
        return out


_SECTIONS: dict[str, type[_Section]] = {
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
    "commitment": CommitmentConfig,
    "retention": RetentionConfig,
}


def _validate(cfg: Config) -> None:
    problem = ae_title_problem(cfg.node.ae_title)
    if problem is not None:
        raise ConfigError(f"node.ae_title: {cfg.node.ae_title!r} is not an AE title: {problem}")
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
    if cfg.node.processes != "auto" and not 1 <= cfg.node.processes <= 64:
        raise ConfigError('node.processes: "auto" or 1 to 64')
    if cfg.node.processes != "auto" and cfg.node.processes > 1 and cfg.node.port == 0:
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
    for key in ("lease_s", "poll_s", "connect_timeout_s", "heartbeat_s", "probe_interval_s"):
        if getattr(fwd, key) <= 0:
            raise ConfigError(f"forwarding.{key}: must be greater than 0")
    if fwd.claimant_timeout_s < 2 * fwd.heartbeat_s:
        raise ConfigError("forwarding.claimant_timeout_s: at least twice heartbeat_s")
    if not 1 <= fwd.batch_size <= 1000:
        raise ConfigError("forwarding.batch_size: 1 to 1000")
    _validate_retention(cfg)
    if cfg.query.max_results < 0:
        raise ConfigError("query.max_results: 0 (no limit) or more")
    if not cfg.storage.data_dir:
        raise ConfigError("storage.data_dir: must not be empty")
    url = cfg.storage.database_url
    if url and not url.startswith(("sqlite:", "postgresql:", "postgresql+psycopg:")):
        raise ConfigError("storage.database_url: sqlite:///PATH or postgresql://... expected")


def _validate_retention(cfg: Config) -> None:
    ret = cfg.retention
    for key in ("keep_days", "keep_flagged_days", "min_free_mb", "max_store_mb", "settle_s"):
        if getattr(ret, key) < 0:
            raise ConfigError(f"retention.{key}: 0 or more")
    if not 0 < ret.interval_s <= 30:
        raise ConfigError("retention.interval_s: above 0, at most 30")
    if not 1 <= ret.batch_size <= 10000:
        raise ConfigError("retention.batch_size: 1 to 10000")
    if ret.enabled and ret.min_free_mb and ret.min_free_mb <= cfg.storage.min_free_mb:
        raise ConfigError(
            "retention.min_free_mb: must be above storage.min_free_mb (the watermark deletes "
            "before the node refuses), or 0 (off)"
        )


def _key(loc: tuple[int | str, ...]) -> str:
    """``("destinations", 0, "url")`` as ``destinations[0].url``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _one_line(exc: ValidationError, environ: Mapping[str, str]) -> ConfigError:
    """The first error of ``exc``, on one line, naming the key (and its variable)."""
    error = exc.errors()[0]
    loc = tuple(error["loc"])
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        parent = Config if len(loc) == 1 else _SECTIONS.get(str(loc[0]))
        known = ", ".join(parent.model_fields) if parent is not None else ""
        message = "unknown key" + (f" (known: {known})" if known else "")
        if len(loc) == 1:
            message = "unknown section" + (f" (known: {known})" if known else "")
    elif "input" in error and error["type"] != "value_error":
        message = f"{error['input']!r}: {message}"
    key = _key(loc)
    if error["type"] == "value_error" and key and message.startswith(key):
        text = message  # the validator named the whole key (swap_rules[0].match...)
    elif error["type"] == "value_error" and (not loc or isinstance(loc[-1], int)):
        text = f"{key}.{message}" if key else message  # the validator named the key
    else:
        text = f"{key}: {message}"
    variable = ENV_PREFIX + "_".join(str(p) for p in loc[:2]).upper()
    if len(loc) >= 1 and variable in {k.upper() for k in environ}:
        text = f"{variable}: {text}"
    return ConfigError(text)


def _nested(overrides: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for dotted, value in overrides.items():
        if value is None:
            continue
        section, key = dotted.split(".", 1)
        out.setdefault(section, {})[key] = value
    return out


def load_config(
    path: Path | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Build the configuration.

    ``path``: the TOML file (``--config``); ``environ``: the environment (``os.environ``
    when ``None``); ``overrides`` maps ``"section.key"`` to a value (command-line options).
    Raises :class:`ConfigError` naming the key.
    """
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"--config: {path} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from None
        for key, value in data.items():
            if key in _SECTIONS and not isinstance(value, Mapping):
                raise ConfigError(f"[{key}] must be a table")
    env = os.environ if environ is None else environ
    token = _SOURCES.set((env, data))
    try:
        cfg = Config(**_nested(overrides or {}))
    except ValidationError as exc:
        raise _one_line(exc, env) from None
    except SettingsError as exc:  # a table or list variable that is not JSON
        section = re.search(r'field "(\w+)"', str(exc))
        where = f"{ENV_PREFIX}{section.group(1).upper()}" if section else ENV_PREFIX.rstrip("_")
        cause = str(exc.__cause__ or exc)
        raise ConfigError(
            f"{where}{'' if cause.startswith(where) else '_'}{cause} "
            '(tables and lists of tables are JSON: \'{"KEY": ["value"]}\')'
        ) from None
    finally:
        _SOURCES.reset(token)
    if path is not None:
        cfg.base_dir = path.resolve().parent
        cfg.source = str(path)
    _validate(cfg)
    return cfg


def json_schema() -> dict[str, Any]:
    """The JSON schema of the configuration file (``docs/config.schema.json``)."""
    schema = Config.model_json_schema()
    schema["title"] = "spacing-scp configuration"
    schema["description"] = (
        "The TOML file of spacing-scp serve --config; every key also as an environment "
        "variable SPACING_SCP_<SECTION>_<KEY>. Generated: python -m scp.config schema"
    )
    return schema


__all__ = [
    "ENV_PREFIX",
    "CommitmentConfig",
    "Config",
    "ConfigError",
    "Destination",
    "ForwardingConfig",
    "HttpConfig",
    "LoggingConfig",
    "NodeConfig",
    "Peer",
    "PolicyConfig",
    "QueryConfig",
    "RetentionConfig",
    "SecurityConfig",
    "SeriesConfig",
    "StorageConfig",
    "TlsConfig",
    "integer",
    "json_schema",
    "load_config",
    "number",
]


if __name__ == "__main__":  # python -m scp.config schema
    if sys.argv[1:] != ["schema"]:
        sys.exit("usage: python -m scp.config schema")
    print(json.dumps(json_schema(), indent=2, sort_keys=True))
