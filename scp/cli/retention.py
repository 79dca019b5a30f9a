"""``spacing-scp delete study|series|instance UID`` and ``spacing-scp deletions``.

A person's deletion (issue 20) works on the index and the file store directly, whether
or not the node runs: refused (exit 1, one line) while a destination has not confirmed an
instance of it, unless ``--force``; recorded with ``cli:USER`` and the ``--reason`` given.
``deletions`` lists what retention and people deleted, newest first.
"""

from __future__ import annotations

import argparse
import getpass

from scp import models
from scp.cli.common import (
    EXIT_OK,
    EXIT_PROBLEM,
    CliError,
    configuration,
    open_index,
    print_json,
    table,
)
from scp.cli.parsing import INDEX_OPTIONS, JSON, LIMIT, Level, option
from scp.services.retention import Level as DeleteLevel
from scp.services.retention import Retention, Undelivered, deletions_page
from storage.filestore import FileStore
from storage.queries import NotFound

DELETION_COLUMNS = [
    "id",
    "deleted_at",
    "reason",
    "actor",
    "level",
    "series_instance_uid",
    "instances",
    "bytes",
    "forced",
]


def register(top: Level) -> None:
    """Add ``delete study|series|instance`` and ``deletions``."""
    group = top.group("delete", "delete a study, series or instance (index and files)")
    for level, keyword in (
        ("study", "StudyInstanceUID"),
        ("series", "SeriesInstanceUID"),
        ("instance", "SOPInstanceUID"),
    ):
        parser = group.command(
            level,
            f"delete a {level}; refused while a destination has not confirmed it",
            (
                *INDEX_OPTIONS,
                JSON,
                option(
                    "--force",
                    action="store_true",
                    help="delete instances no destination confirmed yet, too",
                ),
                option("--reason", metavar="TEXT", help="why (recorded with the deletion)"),
            ),
            cmd_delete,
        )
        parser.add_argument("uid", help=keyword)
        parser.set_defaults(level=level)
    top.command(
        "deletions",
        "deletions by retention and by hand, newest first",
        (*INDEX_OPTIONS, JSON, LIMIT),
        cmd_deletions,
    )


def actor() -> str:
    """``cli:USER``: who ran the command."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


def cmd_delete(args: argparse.Namespace) -> int:
    """Delete the study, series or instance ``args.uid``."""
    cfg = configuration(args)
    level: DeleteLevel = args.level
    with open_index(cfg) as sessions:
        service = Retention(sessions, FileStore(cfg.data_dir, tmp_name="cli"), cfg.retention)
        try:
            done = service.delete(
                level, args.uid, actor=actor(), force=args.force, reason=args.reason or None
            )
        except NotFound as exc:
            raise CliError(str(exc)) from None
        except Undelivered as exc:
            raise CliError(
                str(exc).replace("force the deletion", "use --force"), EXIT_PROBLEM
            ) from None
    if args.json:
        print_json(models.dump(models.DeletionResult, done.as_dict()))
    else:
        forced = " (forced: undelivered instances included)" if done.forced else ""
        print(
            f"deleted {level} {args.uid}: {done.instances} instance(s), {done.bytes} bytes{forced}"
        )
    return EXIT_OK


def cmd_deletions(args: argparse.Namespace) -> int:
    """List deletions, newest first."""
    cfg = configuration(args)
    if args.limit < 1:
        raise CliError("--limit: at least 1")
    with open_index(cfg) as sessions, sessions() as session:
        rows, _ = deletions_page(session, args.limit)
    if args.json:
        print_json(models.dump_list(models.Deletion, rows))
    else:
        print(table(rows, DELETION_COLUMNS))
    return EXIT_OK
