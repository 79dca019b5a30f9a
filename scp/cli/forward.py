"""``spacing-scp forward status|retry|requeue``: the outbox from the command line.

The commands work on the database directly, so they work whether or not the node
runs; a running node picks changed jobs up at its next poll (``forwarding.poll_s``).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from scp import models
from scp.config import Config
from storage import outbox
from storage.db import write_session
from storage.models import ForwardJob

EXIT_OK = 0
EXIT_USAGE = 2

AddOptions = Callable[[argparse.ArgumentParser], None]
LoadConfig = Callable[[argparse.Namespace], Config]


def _sessions(cfg: Config) -> sessionmaker[Session]:
    from storage.db import ensure_schema, make_engine, make_session_factory

    engine = make_engine(cfg.database_url)
    ensure_schema(engine)
    return make_session_factory(engine)


def _usage(message: str) -> int:
    print(f"spacing-scp forward: {message}", file=sys.stderr)
    return EXIT_USAGE


def _known(session: Session, cfg: Config, name: str) -> bool:
    if any(d.name == name for d in cfg.destinations):
        return True
    return session.scalar(select(ForwardJob.id).where(ForwardJob.destination == name)) is not None


def cmd_status(args: argparse.Namespace, load_cfg: LoadConfig) -> int:
    cfg = load_cfg(args)
    sessions = _sessions(cfg)
    with sessions() as session:
        rows = outbox.summary(session, [d.name for d in cfg.destinations])
    if args.json:
        print(json.dumps(models.dump_list(models.DestinationStatus, rows), indent=2))
        return EXIT_OK
    if not rows:
        print("(no destinations configured, no jobs)")
        return EXIT_OK
    columns = ["destination", *outbox.STATES, "oldest_pending_s", "last_error"]
    table: list[list[str]] = []
    for row in rows:
        err = row["last_error"]
        age = row["oldest_pending_age_s"]
        table.append(
            [
                row["destination"],
                *(str(row["counts"][s]) for s in outbox.STATES),
                "" if age is None else f"{age:.0f}",
                "" if err is None else f"{err['at']} {err['message']}"[:100],
            ]
        )
    widths = [max(len(c), *(len(r[i]) for r in table)) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
    print("  ".join("-" * w for w in widths))
    for r in table:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())
    return EXIT_OK


def cmd_retry(args: argparse.Namespace, load_cfg: LoadConfig) -> int:
    cfg = load_cfg(args)
    sessions = _sessions(cfg)
    with write_session(sessions) as session:
        if args.destination and not _known(session, cfg, args.destination):
            return _usage(f"unknown destination {args.destination!r}")
        count = outbox.retry(session, destination=args.destination, dead=args.dead)
    what = "dead job(s) revived" if args.dead else "waiting job(s) made due now"
    print(f"{count} {what}")
    return EXIT_OK


def cmd_requeue(args: argparse.Namespace, load_cfg: LoadConfig) -> int:
    cfg = load_cfg(args)
    if not any(d.name == args.destination for d in cfg.destinations):
        return _usage(f"destination {args.destination!r} is not configured")
    sessions = _sessions(cfg)
    with write_session(sessions) as session:
        count = outbox.requeue_series(session, args.series, args.destination)
    if count is None:
        return _usage(f"no series {args.series}")
    print(f"{count} instance(s) of {args.series} queued for {args.destination}")
    return EXIT_OK


def add_forward_parser(
    sub: Any, add_config_options: AddOptions, load_cfg: LoadConfig
) -> argparse.ArgumentParser:
    """Add ``forward status|retry|requeue`` to the ``spacing-scp`` sub-commands."""
    parser: argparse.ArgumentParser = sub.add_parser(
        "forward", help="forwarding queue: status, retry, requeue"
    )
    fsub = parser.add_subparsers(dest="forward_command", required=True)

    p = fsub.add_parser("status", help="jobs per destination and state, oldest, last error")
    add_config_options(p)
    p.add_argument("--json", action="store_true", help="JSON for scripts")
    p.set_defaults(func=lambda a: cmd_status(a, load_cfg))

    p = fsub.add_parser(
        "retry", help="make jobs waiting for a retry due now (--dead: revive dead jobs)"
    )
    add_config_options(p)
    p.add_argument("--destination", help="only this destination")
    p.add_argument(
        "--dead", action="store_true", help="revive dead jobs (attempts counted from zero)"
    )
    p.set_defaults(func=lambda a: cmd_retry(a, load_cfg))

    p = fsub.add_parser("requeue", help="send a series to a destination again")
    add_config_options(p)
    p.add_argument("--series", required=True, help="SeriesInstanceUID")
    p.add_argument("--destination", required=True, help="a configured destination")
    p.set_defaults(func=lambda a: cmd_requeue(a, load_cfg))
    return parser
