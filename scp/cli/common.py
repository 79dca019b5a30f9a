"""What the ``spacing-scp`` commands share: exit codes, expected failures, the
configuration from the options, the index opened for use, tables and numbers.

Exit codes: :data:`EXIT_OK` (0) success; :data:`EXIT_PROBLEM` (1) the command ran and
found a problem (``check`` found invalid spacing, ``echo`` got no answer, ``reindex``
skipped files) or failed at run time (database unreachable, I/O error);
:data:`EXIT_USAGE` (2) usage or configuration error (unknown or misplaced option, bad
configuration value, unreadable configuration file, missing input, no index in the data
directory, outdated schema, unknown series or destination).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from scp.config import Config, load_config
from storage.db import current_revision, ensure_schema, make_engine, make_session_factory

EXIT_OK = 0
EXIT_PROBLEM = 1
EXIT_USAGE = 2


class CliError(Exception):
    """An expected failure: ``spacing-scp <command>: <message>``, one line on stderr,
    exit code ``exit_code``."""

    def __init__(self, message: str, exit_code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.exit_code = exit_code


#: Command-line options that override configuration keys: key -> namespace dest.
_OVERRIDES = {
    "storage.data_dir": "data_dir",
    "storage.database_url": "database_url",
    "node.port": "port",
    "node.ae_title": "ae_title",
    "node.host": "host",
    "http.port": "http_port",
}


def configuration(args: argparse.Namespace) -> Config:
    """The configuration: ``--config`` FILE, environment, then the options of ``args``
    (``--data-dir``, ``--port``...).  Raises :class:`scp.config.ConfigError` for a wrong
    key or value, :class:`CliError` for a configuration file that cannot be read."""
    path: Path | None = getattr(args, "config", None)
    overrides = {key: getattr(args, dest, None) for key, dest in _OVERRIDES.items()}
    try:
        return load_config(path, overrides=overrides)
    except UnicodeDecodeError:
        raise CliError(f"--config: {path} is not UTF-8 text") from None
    except OSError as exc:  # FileNotFoundError is a ConfigError already
        raise CliError(f"--config: cannot read {path}: {exc.strerror}") from None


def _where(cfg: Config) -> str:
    """The index's place for messages: the SQLite file or the URL without password."""
    url = make_url(cfg.database_url)
    if url.get_backend_name() == "sqlite":
        return f"{url.database} (data directory {cfg.data_dir})"
    return url.render_as_string(hide_password=True)


@contextmanager
def open_index(cfg: Config) -> Iterator[sessionmaker[Session]]:
    """Sessions on the configured index, which must exist at the schema's head revision;
    the engine is disposed on exit.  Never creates anything: no data directory, no SQLite
    file, no tables.  Raises :class:`CliError` when there is no index (exit 2),
    :class:`storage.db.SchemaOutdated` when it needs ``spacing-scp db upgrade``."""
    missing = CliError(
        f"no index at {_where(cfg)}: run `spacing-scp serve` or `spacing-scp db upgrade` "
        "(with the same --config/--data-dir/--database-url) to create it"
    )
    url = make_url(cfg.database_url)
    sqlite_file = url.database if url.get_backend_name() == "sqlite" else None
    if sqlite_file not in (None, "", ":memory:"):
        path = Path(str(sqlite_file))
        if not path.is_file() or path.stat().st_size == 0:  # connecting would write it
            raise missing
    engine = make_engine(cfg.database_url)
    try:
        if current_revision(engine) is None:
            raise missing
        ensure_schema(engine, create_if_empty=False)
        yield make_session_factory(engine)
    finally:
        engine.dispose()


def print_json(value: Any) -> None:
    """``value`` as indented JSON on stdout."""
    print(json.dumps(value, indent=2))


def table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """``rows`` as a text table of ``columns`` (``None`` shown empty); ``(none)`` if empty."""
    if not rows:
        return "(none)"
    cells = [[("" if r.get(c) is None else str(r.get(c))) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(line.rstrip() for line in lines)


def fmt_mm(value: float | None) -> str:
    """A length in mm, shortest form (``0.5``, ``1.25``); empty for ``None``."""
    return "" if value is None else f"{value:g}"


def fmt_spacing(pixel_spacing: dict[str, Any]) -> str:
    """``row\\column`` in mm of an effective Pixel Spacing dict (``row_mm``, ``column_mm``,
    as (0028,0030) orders them); empty when undefined."""
    if pixel_spacing["row_mm"] is None:
        return ""
    return f"{fmt_mm(pixel_spacing['row_mm'])}\\{fmt_mm(pixel_spacing['column_mm'])}"
