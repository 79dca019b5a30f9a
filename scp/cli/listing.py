"""``spacing-scp studies`` and ``spacing-scp instances``: what is indexed, newest first."""

from __future__ import annotations

import argparse
from typing import Any

from scp import models
from scp.cli.common import EXIT_OK, configuration, fmt_spacing, open_index, print_json, table
from scp.cli.parsing import INDEX_OPTIONS, JSON, LIMIT, Level, option
from storage import queries

STUDY_COLUMNS = [
    "study_instance_uid",
    "patient_id",
    "accession_number",
    "study_date",
    "series_count",
    "instance_count",
]
INSTANCE_COLUMNS = [
    "sop_instance_uid",
    "status_hex",
    "verdict",
    "received_pixel_spacing",
    "spacing_mm",
    "source",
    "calling_ae_title",
]


def register(top: Level) -> None:
    """Add ``studies`` and ``instances``."""
    top.command("studies", "list indexed studies", (*INDEX_OPTIONS, JSON, LIMIT), cmd_studies)
    series = option("--series", metavar="UID", help="only this SeriesInstanceUID")
    top.command(
        "instances", "list indexed instances", (*INDEX_OPTIONS, JSON, LIMIT, series), cmd_instances
    )


def cmd_studies(args: argparse.Namespace) -> int:
    """STUDY rows: UIDs, patient, accession, date, series and instance counts."""
    with open_index(configuration(args)) as sessions, sessions() as session:
        rows = models.dump_list(models.Study, queries.list_studies(session, limit=args.limit))
    if args.json:
        print_json(rows)
    else:
        print(table(rows, STUDY_COLUMNS))
    return EXIT_OK


def cmd_instances(args: argparse.Namespace) -> int:
    """INSTANCE rows, most recently received first: DIMSE status, verdict, received and
    effective Pixel Spacing (0028,0030) in mm and its source."""
    with open_index(configuration(args)) as sessions, sessions() as session:
        rows = models.dump_list(
            models.Instance, queries.list_recent_instances(session, args.series, limit=args.limit)
        )
    if args.json:
        print_json(rows)
    else:
        print(table([_instance_row(r) for r in rows], INSTANCE_COLUMNS))
    return EXIT_OK


def _instance_row(r: dict[str, Any]) -> dict[str, Any]:
    """An INSTANCE with the table's derived columns (not in the JSON)."""
    return {
        **r,
        "spacing_mm": fmt_spacing(r["pixel_spacing"]),
        "source": r["pixel_spacing"]["source"],
        "status_hex": f"0x{r['status']:04X}",
    }
