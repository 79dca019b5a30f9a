"""Command line: ``spacing-scp``, one module per command group."""

from scp.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
