"""``spacing-scp check PATH...``: the node's spacing pipeline on files and folders,
offline (no network, no index); ``--fix`` writes corrected, annotated copies."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from scp import models
from scp.cli.common import (
    EXIT_OK,
    EXIT_PROBLEM,
    CliError,
    configuration,
    fmt_spacing,
    print_json,
    table,
)
from scp.cli.parsing import CONFIG, Level, option
from scp.cli.series import SERIES_COLUMNS, series_row
from scp.services.check import Checked, run_check

CHECK_OPTIONS = (
    CONFIG,
    option("--json", action="store_true", help='JSON: {"instances": [...], "series": [...]}'),
    option("--fix", type=Path, metavar="OUTDIR", help="write corrected copies here"),
)
FILE_COLUMNS = ["file", "verdict", "received_ps", "spacing_mm", "source", "codes"]


def register(top: Level) -> None:
    """Add ``check PATH...``."""
    check = top.command(
        "check", "run the spacing pipeline on files and folders", CHECK_OPTIONS, cmd_check
    )
    check.add_argument("paths", nargs="+", type=Path, help="DICOM files or folders (recursive)")


def cmd_check(args: argparse.Namespace) -> int:
    """Check every file under ``args.paths`` with the configured policy; 1 when any
    instance is ``invalid``.  Raises :class:`CliError` (exit 2) for a missing path or a
    ``--fix`` folder that is an input."""
    cfg = configuration(args)
    try:
        items, series, skipped = run_check(
            args.paths, cfg.spacing_policy, cfg.node.ae_title, cfg.tolerance, args.fix
        )
    except (FileNotFoundError, ValueError) as exc:
        raise CliError(str(exc)) from None
    if args.json:
        report = {
            "instances": [i.to_dict() for i in items],
            "series": series,
            "skipped_non_dicom": skipped,
        }
        print_json(models.dump(models.CheckReport, report))
    else:
        print(table([_file_row(i) for i in items], FILE_COLUMNS))
        print()
        print(table([series_row(s) for s in series], SERIES_COLUMNS))
        print(
            f"\n{len(items)} instances, {len(series)} series"
            + (f", {skipped} non-DICOM files skipped" if skipped else "")
            + (f"; corrected copies in {args.fix}" if args.fix else "")
        )
    return EXIT_PROBLEM if any(i.verdict == "invalid" for i in items) else EXIT_OK


def _file_row(item: Checked) -> dict[str, Any]:
    d = item.to_dict()
    return {
        "file": str(item.path),
        "verdict": d["verdict"],
        "received_ps": d["received_pixel_spacing"],
        "spacing_mm": fmt_spacing(d["pixel_spacing"]),
        "source": d["pixel_spacing"]["source"],
        "codes": ",".join(sorted({f["code"] for f in d["findings"]})),
    }
