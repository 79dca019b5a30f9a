"""``spacing-scp reindex`` (rebuild the index from the file store) and ``spacing-scp db
upgrade`` (apply the schema's migrations): the commands that may create the index."""

from __future__ import annotations

import argparse

from scp.cli.common import EXIT_OK, EXIT_PROBLEM, CliError, configuration
from scp.cli.parsing import INDEX_OPTIONS, Level
from scp.services.reindex import reindex
from storage.db import make_engine, upgrade


def register(top: Level) -> None:
    """Add ``reindex`` and ``db upgrade``."""
    top.command("reindex", "rebuild the index from the file store", INDEX_OPTIONS, cmd_reindex)
    db = top.group("db", "database schema")
    db.command("upgrade", "apply pending schema migrations", INDEX_OPTIONS, cmd_db_upgrade)


def cmd_reindex(args: argparse.Namespace) -> int:
    """Index every stored file the index lacks (creating the index if needed); 0 when every
    stored file is indexed, 1 when some were skipped (each named on stdout).  Raises
    :class:`CliError` (exit 2) when the data directory does not exist."""
    cfg = configuration(args)
    if not cfg.data_dir.is_dir():
        raise CliError(f"no data directory {cfg.data_dir}: no file store to rebuild the index from")
    report = reindex(cfg)
    for path, why in report.skipped:
        print(f"skipped {path}: {why}")
    print(
        f"reindex: {report.indexed} indexed, {report.already_indexed} already indexed, "
        f"{len(report.skipped)} skipped"
        + (
            f", {report.policy_changed} differ from the current policy"
            if report.policy_changed
            else ""
        )
    )
    return EXIT_PROBLEM if report.skipped else EXIT_OK


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    """Create the index or bring its schema to the head revision; prints both revisions."""
    cfg = configuration(args)
    if cfg.database_url.startswith("sqlite"):
        cfg.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(cfg.database_url)
    try:
        before, after = upgrade(engine)
    finally:
        engine.dispose()
    print(f"database schema: {before or 'empty'} -> {after}")
    return EXIT_OK
