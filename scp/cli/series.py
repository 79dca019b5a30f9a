"""``spacing-scp series [list]`` and ``spacing-scp series show UID``: the SERIES spacing
summaries of the index (Pixel Spacing (0028,0030) and the slice spacing along Z, in mm).

The table row (:func:`series_row`) is shared with ``spacing-scp check``.
"""

from __future__ import annotations

import argparse
from typing import Any

from scp import models
from scp.cli.common import (
    EXIT_OK,
    CliError,
    configuration,
    fmt_mm,
    fmt_spacing,
    open_index,
    print_json,
    table,
)
from scp.cli.parsing import INDEX_OPTIONS, JSON, LIMIT, Level, option
from scp.config import Config
from scp.services.series_query import IndexQueries, NotFound

SERIES_COLUMNS = [
    "series_instance_uid",
    "modality",
    "instances",
    "state",
    "pixel_spacing_mm",
    "source",
    "z_mm",
    "missing",
    "findings",
]

LIST_OPTIONS = (
    *INDEX_OPTIONS,
    JSON,
    LIMIT,
    option("--study", metavar="UID", help="only this StudyInstanceUID"),
    option("--modality", metavar="M", help="only this Modality"),
    option("--code", metavar="C", help="only series with this finding code"),
)
SHOW_OPTIONS = (*INDEX_OPTIONS, JSON)


def register(top: Level) -> None:
    """Add ``series list`` (the default) and ``series show UID``."""
    group = top.group("series", "series spacing summaries (list, show UID)", required=False)
    group.command("list", "list series (the default)", LIST_OPTIONS, cmd_list, default=True)
    show = group.command("show", "one series in detail", SHOW_OPTIONS, cmd_show)
    show.add_argument("uid", help="SeriesInstanceUID")


def _queries(args: argparse.Namespace) -> tuple[Config, IndexQueries]:
    cfg = configuration(args)
    return cfg, IndexQueries(cfg.series.quiet_seconds, cfg.tolerance)


def cmd_list(args: argparse.Namespace) -> int:
    """Series, filtered by ``--study``, ``--modality``, ``--code``; a table or JSON."""
    cfg, queries = _queries(args)
    with open_index(cfg) as sessions, sessions() as session:
        items, _ = queries.list_series(
            session,
            study_instance_uid=args.study,
            modality=args.modality,
            code=args.code,
            limit=args.limit,
        )
    if args.json:
        print_json(models.dump_list(models.Series, items))
    else:
        print(table([series_row(s) for s in items], SERIES_COLUMNS))
    return EXIT_OK


def cmd_show(args: argparse.Namespace) -> int:
    """One series in detail; :class:`CliError` (exit 2) when the index does not have it."""
    cfg, queries = _queries(args)
    with open_index(cfg) as sessions, sessions() as session:
        try:
            item = queries.get_series(session, args.uid)
        except NotFound as exc:
            raise CliError(str(exc)) from None
    if args.json:
        print_json(models.dump(models.Series, item))
    else:
        print_series_detail(item)
    return EXIT_OK


def series_row(s: dict[str, Any]) -> dict[str, Any]:
    """A SERIES summary as one row of :data:`SERIES_COLUMNS`."""
    ps, z = s["pixel_spacing"], s["slice_spacing"]
    spacing = fmt_spacing(ps)
    if spacing and not ps["consistent"]:
        spacing += " (varies)"
    zt = fmt_mm(z["mm"])
    if z["mm"] is not None and z.get("uniform") is False:
        zt += " (non-uniform)"
    return {
        "series_instance_uid": s["series_instance_uid"],
        "modality": s.get("modality"),
        "instances": s["instance_count"],
        "state": s["state"],
        "pixel_spacing_mm": spacing,
        "source": ps["source"],
        "z_mm": zt,
        "missing": z.get("missing_slices") or "",
        "findings": ",".join(sorted({f["code"] for f in s["findings"]})),
    }


def print_series_detail(s: dict[str, Any]) -> None:
    """A SERIES summary on several lines: spacing, Z geometry, thickness, findings."""
    ps, z = s["pixel_spacing"], s["slice_spacing"]
    print(
        f"Series {s['series_instance_uid']}  ({s.get('modality') or '?'}, "
        f"{s['instance_count']} instances, {s['state']})"
    )
    print(f"  study                {s.get('study_instance_uid')}")
    print(
        f"  pixel spacing        row {fmt_mm(ps['row_mm']) or '-'} mm, column "
        f"{fmt_mm(ps['column_mm']) or '-'} mm, source {ps['source'] or '-'}, "
        f"{'consistent' if ps['consistent'] else 'NOT consistent'}"
    )
    if z["mm"] is None:
        print("  slice spacing (Z)    undefined")
    else:
        print(
            f"  slice spacing (Z)    {fmt_mm(z['mm'])} mm (min {fmt_mm(z['min_mm'])}, max "
            f"{fmt_mm(z['max_mm'])}), uniform {z['uniform']}, missing "
            f"{z['missing_slices']}, tilt {fmt_mm(z['tilt_degrees']) or '-'} deg"
            f"{' (provisional)' if z.get('provisional') else ''}"
        )
    print(f"  slice thickness      {fmt_mm(s['slice_thickness_mm']) or '-'} mm")
    print(f"  spacing btw slices   {fmt_mm(s['spacing_between_slices_mm']) or '-'} mm")
    print(f"  corrected instances  {s['corrected_instances']}")
    if s["deleted_instances"]:
        print(f"  deleted instances    {s['deleted_instances']} (geometry as received)")
    if s["findings"]:
        print("  findings:")
        for f in s["findings"]:
            print(f"    {f['severity']:<9} {f['code']} x{f.get('count', 1)}: {f['message']}")
