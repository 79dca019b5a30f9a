"""The ``spacing-scp`` parser: an option counts wherever it stands.

argparse parses a subcommand into a namespace of its own and then copies every value
of it, defaults included, over the parent's: ``series --json list`` lost ``--json`` to
the ``list`` parser's default ``False``.  Here every parser declares its options with
``default=argparse.SUPPRESS``, so only options actually given reach the namespace, and
:meth:`Parser.parse_command` fills in the chosen command's defaults afterwards.

An option is accepted at every level of its command's path:

* the top level, before the command: the options that say where the configuration and
  the index are (``--config``, ``--data-dir``, ``--database-url``), for the commands
  that take them (:data:`TOP_LEVEL`);
* a command group (``series``, ``forward``, ``db``), before its subcommand: every option
  of its subcommands;
* the command itself, after it.

Given once, an option counts wherever it stands; given twice, the last one counts (as
argparse does on one level).  An option accepted at a level but not taken by the chosen
command (``series --study U show UID``) is a usage error, and options are spelt in full
(``allow_abbrev=False``: ``--data`` could mean different options at different levels).
Usage errors are one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from scp.cli.common import EXIT_USAGE
from scp.config import integer

#: Destinations of the options the top level accepts before the command.
TOP_LEVEL = frozenset({"config", "data_dir", "database_url"})

Run = Callable[[argparse.Namespace], int]


@dataclass(frozen=True)
class Option:
    """One ``--flag``: its namespace ``dest``, the default its command gets when it is
    not given, whether it must be given, and the other ``add_argument`` keywords."""

    flags: tuple[str, ...]
    dest: str
    default: Any = None
    required: bool = False
    kwargs: Mapping[str, Any] = field(default_factory=dict)


def option(*flags: str, default: Any = None, required: bool = False, **kwargs: Any) -> Option:
    """An :class:`Option`; ``dest`` from the first flag (``--data-dir`` -> ``data_dir``),
    default ``False`` for ``action="store_true"``."""
    if kwargs.get("action") == "store_true":
        default = False
    dest = flags[0].lstrip("-").replace("-", "_")
    return Option(tuple(flags), dest, default, required, kwargs)


@dataclass(frozen=True)
class Command:
    """A runnable command: its full name (``spacing-scp series list``), its options and
    the function that runs it (returns the exit code)."""

    prog: str
    options: tuple[Option, ...]
    run: Run


def _add(parser: argparse.ArgumentParser, opt: Option) -> None:
    parser.add_argument(*opt.flags, dest=opt.dest, default=argparse.SUPPRESS, **opt.kwargs)


class Parser(argparse.ArgumentParser):
    """An argparse parser with one-line usage errors and no abbreviated options."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)
        #: Every option of every command below this parser, by dest (the top level's).
        self.known: dict[str, Option] = {}

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: {message} (see `{self.prog} --help`)\n")

    def parse_command(self, argv: Sequence[str] | None) -> tuple[argparse.Namespace, Command]:
        """Parse ``argv``; return the namespace, with the command's defaults filled in, and
        the command.  Raises ``SystemExit(2)`` after a one-line message on a usage error:
        a syntax error, an option the command does not take, a required option missing."""
        args = self.parse_args(argv)
        command: Command = args._command
        taken = {opt.dest for opt in command.options}
        for dest in sorted(set(vars(args)) & set(self.known) - taken):
            self._usage(command, f"{self.known[dest].flags[0]} does not apply to this command")
        for opt in command.options:
            if not hasattr(args, opt.dest):
                if opt.required:
                    self._usage(command, f"{opt.flags[0]} is required")
                setattr(args, opt.dest, opt.default)
        return args, command

    def _usage(self, command: Command, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{command.prog}: {message} (see `{command.prog} --help`)\n")


class Level:
    """A parser with subcommands (the top level or a command group): it accepts the
    options of every command below it (the top level only those of :data:`TOP_LEVEL`)."""

    def __init__(
        self, parser: Parser, *, parent: Level | None = None, required: bool = True
    ) -> None:
        self.parser = parser
        self.parent = parent
        self._added: set[str] = set()
        self._sub = parser.add_subparsers(metavar="COMMAND", required=required)

    def _accept(self, options: Sequence[Option]) -> None:
        for opt in options:
            if self.parent is None:
                self.parser.known.setdefault(opt.dest, opt)
                if opt.dest not in TOP_LEVEL:
                    continue
            if opt.dest not in self._added:
                self._added.add(opt.dest)
                _add(self.parser, opt)
        if self.parent is not None:
            self.parent._accept(options)

    def command(
        self, name: str, help: str, options: Sequence[Option], run: Run, *, default: bool = False
    ) -> Parser:
        """Add the command ``name``; return its parser (for positional arguments).
        ``default``: the group runs it when no subcommand is given."""
        parser = self._sub.add_parser(name, help=help, description=help)
        for opt in options:
            _add(parser, opt)
        command = Command(parser.prog, tuple(options), run)
        parser.set_defaults(_command=command)
        if default:
            self.parser.set_defaults(_command=command)
        self._accept(options)
        return parser

    def group(self, name: str, help: str, *, required: bool = True) -> Level:
        """Add the command group ``name`` (``required=False``: one of its commands is
        the default)."""
        parser = self._sub.add_parser(name, help=help, description=help)
        return Level(parser, parent=self, required=required)


# -- options several commands share -------------------------------------------------------------
CONFIG = option("--config", type=Path, metavar="FILE", help="TOML configuration file")
DATA_DIR = option("--data-dir", metavar="DIR", help="data directory (file store and SQLite index)")
DATABASE_URL = option("--database-url", metavar="URL", help="sqlite:///PATH or postgresql://...")
#: Where the configuration and the index are: every command that reads or writes the index.
INDEX_OPTIONS = (CONFIG, DATA_DIR, DATABASE_URL)
JSON = option("--json", action="store_true", help="JSON for scripts")
LIMIT = option("--limit", type=integer, default=1000, metavar="N", help="at most N rows (1000)")
