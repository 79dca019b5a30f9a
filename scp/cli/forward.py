"""``spacing-scp forward status|retry|requeue``: the outbox from the command line.

The commands work on the database directly, so they work whether or not the node
runs; a running node picks changed jobs up at its next poll (``forwarding.poll_s``).
They need an existing index (:func:`scp.cli.common.open_index`).
"""

from __future__ import annotations

import argparse
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from scp import models
from scp.cli.common import EXIT_OK, CliError, configuration, open_index, print_json, table
from scp.cli.parsing import INDEX_OPTIONS, JSON, Level, option
from scp.config import Config
from storage import outbox
from storage.db import write_session
from storage.models import ForwardJob

STATUS_COLUMNS = ["destination", *outbox.STATES, "oldest_pending_s", "last_error"]


def register(top: Level) -> None:
    """Add ``forward status``, ``forward retry`` and ``forward requeue``."""
    group = top.group("forward", "forwarding queue: status, retry, requeue")
    group.command(
        "status",
        "jobs per destination and state, oldest, last error",
        (*INDEX_OPTIONS, JSON),
        cmd_status,
    )
    group.command(
        "retry",
        "make jobs waiting for a retry due now (--dead: revive dead jobs)",
        (
            *INDEX_OPTIONS,
            option("--destination", metavar="NAME", help="only this destination"),
            option(
                "--dead", action="store_true", help="revive dead jobs (attempts counted from zero)"
            ),
        ),
        cmd_retry,
    )
    group.command(
        "requeue",
        "send a series to a destination again",
        (
            *INDEX_OPTIONS,
            option("--series", metavar="UID", required=True, help="SeriesInstanceUID"),
            option("--destination", metavar="NAME", required=True, help="a configured destination"),
        ),
        cmd_requeue,
    )


def _known(session: Session, cfg: Config, name: str) -> bool:
    if any(d.name == name for d in cfg.destinations):
        return True
    return session.scalar(select(ForwardJob.id).where(ForwardJob.destination == name)) is not None


def cmd_status(args: argparse.Namespace) -> int:
    """Per destination: jobs by state, the oldest undelivered job's age (s), last error."""
    cfg = configuration(args)
    with open_index(cfg) as sessions, sessions() as session:
        rows = outbox.summary(session, [d.name for d in cfg.destinations])
    if args.json:
        print_json(models.dump_list(models.DestinationStatus, rows))
    elif not rows:
        print("(no destinations configured, no jobs)")
    else:
        print(table([_status_row(row) for row in rows], STATUS_COLUMNS))
    return EXIT_OK


def _status_row(row: dict[str, Any]) -> dict[str, Any]:
    err, age = row["last_error"], row["oldest_pending_age_s"]
    return {
        "destination": row["destination"],
        **row["counts"],
        "oldest_pending_s": None if age is None else f"{age:.0f}",
        "last_error": None if err is None else f"{err['at']} {err['message']}"[:100],
    }


def cmd_retry(args: argparse.Namespace) -> int:
    """Make waiting jobs due now (``--dead``: revive dead jobs).  Raises
    :class:`CliError` (exit 2) for a destination neither configured nor in the outbox."""
    cfg = configuration(args)
    with open_index(cfg) as sessions, write_session(sessions) as session:
        if args.destination and not _known(session, cfg, args.destination):
            raise CliError(f"unknown destination {args.destination!r}")
        count = outbox.retry(session, destination=args.destination, dead=args.dead)
    what = "dead job(s) revived" if args.dead else "waiting job(s) made due now"
    print(f"{count} {what}")
    return EXIT_OK


def cmd_requeue(args: argparse.Namespace) -> int:
    """Queue every instance of ``--series`` for ``--destination`` again.  Raises
    :class:`CliError` (exit 2) for a destination not configured or an unknown series."""
    cfg = configuration(args)
    if not any(d.name == args.destination for d in cfg.destinations):
        raise CliError(f"destination {args.destination!r} is not configured")
    with open_index(cfg) as sessions, write_session(sessions) as session:
        count = outbox.requeue_series(session, args.series, args.destination)
        if count is None:
            raise CliError(f"no series {args.series}")
    print(f"{count} instance(s) of {args.series} queued for {args.destination}")
    return EXIT_OK
