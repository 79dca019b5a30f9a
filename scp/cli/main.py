"""``spacing-scp``: the command line of the node; builds the parser and runs a command.

Each command group lives in its own module (:mod:`scp.cli.serve`, :mod:`scp.cli.listing`,
:mod:`scp.cli.series`, :mod:`scp.cli.check`, :mod:`scp.cli.index`,
:mod:`scp.cli.forward`, :mod:`scp.cli.retention`); :mod:`scp.cli.parsing` makes options
count wherever they stand.
An expected failure is one line on stderr, ``spacing-scp <command>: <message>``, never
a traceback; exit codes are those of :mod:`scp.cli.common` (0 success, 1 a problem found
or a run-time failure, 2 a usage or configuration error).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from sqlalchemy.exc import SQLAlchemyError

from scp import __version__
from scp.cli import check, forward, index, listing, retention, series, serve
from scp.cli.common import EXIT_PROBLEM, EXIT_USAGE, CliError
from scp.cli.parsing import Level, Parser
from scp.config import ConfigError
from storage.db import SchemaOutdated

PROG = "spacing-scp"
EPILOG = (
    "Options may stand before or after a subcommand (`series --json list` = `series list "
    "--json`); --config, --data-dir and --database-url also before the command. "
    "Exit codes: 0 success, 1 a problem found or a run-time failure, 2 usage or "
    "configuration error."
)


def build_parser() -> Parser:
    """The ``spacing-scp`` parser; :meth:`Parser.parse_command` parses a command line."""
    parser = Parser(
        prog=PROG,
        description="DICOM storage node that checks, corrects and indexes pixel/slice spacing.",
        epilog=EPILOG,
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    top = Level(parser)
    for group in (serve, check, series, listing, forward, index, retention):
        group.register(top)
    return parser


def _one_line(exc: BaseException) -> str:
    """The first line of an error's message (SQLAlchemy adds SQL and a link on more)."""
    orig = getattr(exc, "orig", None)
    text = str(orig if orig is not None else exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``spacing-scp`` with ``argv`` (default ``sys.argv[1:]``); return the exit code."""
    prog = PROG
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args, command = build_parser().parse_command(argv)
        # the command line as given: ``serve`` starts its other processes with it
        args.argv = argv
        prog = command.prog
        return int(command.run(args))
    except SystemExit as exc:  # argparse: --help, --version, usage errors (printed)
        return 0 if exc.code is None else exc.code if isinstance(exc.code, int) else EXIT_USAGE
    except CliError as exc:
        code, message = exc.exit_code, str(exc)
    except ConfigError as exc:
        code, message = EXIT_USAGE, f"configuration error: {exc}"
    except SchemaOutdated as exc:
        code, message = EXIT_USAGE, str(exc)
    except SQLAlchemyError as exc:  # unreachable server, not a database, ...
        code, message = EXIT_PROBLEM, f"database error: {_one_line(exc)}"
    except OSError as exc:  # a file that cannot be read or written, an address in use
        code, message = EXIT_PROBLEM, _one_line(exc)
    print(f"{prog}: {message}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
