"""``spacing-scp``: the command line of the node.

Every command exits 0 on success, 1 when what it checked found a problem
(``check``, ``echo``), and 2 with a one-line message for bad input.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from scp import __version__
from scp.config import Config, ConfigError, load_config

EXIT_OK = 0
EXIT_PROBLEM = 1
EXIT_USAGE = 2


def _add_config_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, help="TOML configuration file")
    p.add_argument("--data-dir", help="data directory (file store and SQLite index)")
    p.add_argument("--database-url", help="sqlite:///PATH or postgresql://...")


def _config(args: argparse.Namespace) -> Config:
    overrides = {
        "storage.data_dir": getattr(args, "data_dir", None),
        "storage.database_url": getattr(args, "database_url", None),
        "node.port": getattr(args, "port", None),
        "node.ae_title": getattr(args, "ae_title", None),
        "node.host": getattr(args, "host", None),
        "http.port": getattr(args, "http_port", None),
    }
    return load_config(args.config, overrides=overrides)


def _setup_logging(level: str, processes: int = 1) -> None:
    # With several receiving processes their lines share one stream: say whose they are.
    who = " [pid %(process)d]" if processes > 1 else ""
    logging.basicConfig(
        level=getattr(logging, level),
        format=f"%(asctime)s %(levelname)s{who} %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # pynetdicom logs every PDU at INFO; its own view adds nothing to ours.
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)


# -- serve -------------------------------------------------------------------------------------
def cmd_serve(args: argparse.Namespace) -> int:
    cfg = _config(args)
    _setup_logging(cfg.logging.level, cfg.node.processes)
    from scp.node import Node

    worker = int(getattr(args, "worker", 0) or 0)
    listen_fd = getattr(args, "listen_fd", None)
    node = Node(cfg, worker=worker, listen_fd=listen_fd if worker else None)
    node.start()
    children = [] if worker else _start_workers(cfg.node.processes, node.listening_fd())
    stop = threading.Event()
    log = logging.getLogger("spacing_scp.node")

    def _on_signal(signum: int, _frame: Any) -> None:
        log.info("%s received: stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    while not stop.wait(1.0):
        for child in children:
            if child.poll() is not None:
                log.error("receiving process %d exited with %s", child.pid, child.returncode)
                children.remove(child)
                break
    for child in children:
        child.send_signal(signal.SIGTERM)
    node.stop()
    code = EXIT_OK
    for child in children:
        try:
            if child.wait(timeout=cfg.node.shutdown_grace_s + 15) != 0:
                code = EXIT_PROBLEM
        except subprocess.TimeoutExpired:
            child.kill()
            code = EXIT_PROBLEM
    return code


def _start_workers(processes: int, listen_fd: int) -> list[subprocess.Popen[bytes]]:
    """The extra receiving processes of ``[node] processes``: the same command line, marked
    ``--worker N``; they inherit the listening socket (``--listen-fd``) and share the index
    and the store."""
    argv = [sys.executable, "-m", "scp", *sys.argv[1:]]
    return [
        subprocess.Popen(
            [*argv, "--worker", str(i), "--listen-fd", str(listen_fd)],
            pass_fds=[listen_fd],
            preexec_fn=_die_with_parent,
        )
        for i in range(1, processes)
    ]


def _die_with_parent() -> None:
    """In a receiving process: get SIGTERM when the first process dies (Linux prctl)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


# -- echo --------------------------------------------------------------------------------------
def cmd_echo(args: argparse.Namespace) -> int:
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

    ae = AE(ae_title=args.calling_ae_title)
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.network_timeout = ae.dimse_timeout = args.timeout
    assoc = ae.associate(args.host, args.port, ae_title=args.called_ae_title)
    if not assoc.is_established:
        print(f"echo: no association with {args.host}:{args.port}", file=sys.stderr)
        return EXIT_PROBLEM
    rsp = assoc.send_c_echo()
    assoc.release()
    code = getattr(rsp, "Status", None)
    if code != 0:
        print(f"echo: C-ECHO status {code}", file=sys.stderr)
        return EXIT_PROBLEM
    print("echo: success")
    return EXIT_OK


# -- listing -----------------------------------------------------------------------------------
def _table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    if not rows:
        return "(none)"
    cells = [[("" if r.get(c) is None else str(r.get(c))) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(lines)


def _open_index(cfg: Config) -> Any:
    from storage.db import ensure_schema, make_engine, make_session_factory

    engine = make_engine(cfg.database_url)
    ensure_schema(engine)
    return make_session_factory(engine)


def _list(args: argparse.Namespace, what: str) -> int:
    cfg = _config(args)
    from scp import models
    from storage import queries

    sessions = _open_index(cfg)
    with sessions() as session:
        if what == "studies":
            rows = models.dump_list(models.Study, queries.list_studies(session, limit=args.limit))
            table_rows = rows
            cols = [
                "study_instance_uid",
                "patient_id",
                "accession_number",
                "study_date",
                "series_count",
                "instance_count",
            ]
        else:
            rows = models.dump_list(
                models.Instance,
                queries.list_recent_instances(session, args.series, limit=args.limit),
            )
            table_rows = [_instance_row(r) for r in rows]
            cols = [
                "sop_instance_uid",
                "status_hex",
                "verdict",
                "received_pixel_spacing",
                "spacing_mm",
                "source",
                "calling_ae_title",
            ]
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(_table(table_rows, cols))
    return EXIT_OK


def _instance_row(r: dict[str, Any]) -> dict[str, Any]:
    """An INSTANCE with the table's derived columns (not in the JSON)."""
    ps = r["pixel_spacing"]
    return {
        **r,
        "spacing_mm": f"{ps['row_mm']:g}\\{ps['column_mm']:g}" if ps["row_mm"] is not None else "",
        "source": ps["source"],
        "status_hex": f"0x{r['status']:04X}",
    }


def _fmt_mm(value: Any) -> str:
    return "" if value is None else f"{value:g}"


def _series_row(s: dict[str, Any]) -> dict[str, Any]:
    ps, z = s["pixel_spacing"], s["slice_spacing"]
    spacing = ""
    if ps["row_mm"] is not None:
        spacing = f"{_fmt_mm(ps['row_mm'])}\\{_fmt_mm(ps['column_mm'])}"
        spacing += "" if ps["consistent"] else " (varies)"
    zt = _fmt_mm(z["mm"])
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


def _print_series_detail(s: dict[str, Any]) -> None:
    ps, z = s["pixel_spacing"], s["slice_spacing"]
    print(
        f"Series {s['series_instance_uid']}  ({s.get('modality') or '?'}, "
        f"{s['instance_count']} instances, {s['state']})"
    )
    print(f"  study                {s.get('study_instance_uid')}")
    print(
        f"  pixel spacing        row {_fmt_mm(ps['row_mm']) or '-'} mm, column "
        f"{_fmt_mm(ps['column_mm']) or '-'} mm, source {ps['source'] or '-'}, "
        f"{'consistent' if ps['consistent'] else 'NOT consistent'}"
    )
    if z["mm"] is None:
        print("  slice spacing (Z)    undefined")
    else:
        print(
            f"  slice spacing (Z)    {_fmt_mm(z['mm'])} mm (min {_fmt_mm(z['min_mm'])}, max "
            f"{_fmt_mm(z['max_mm'])}), uniform {z['uniform']}, missing "
            f"{z['missing_slices']}, tilt {_fmt_mm(z['tilt_degrees']) or '-'} deg"
            f"{' (provisional)' if z.get('provisional') else ''}"
        )
    print(f"  slice thickness      {_fmt_mm(s['slice_thickness_mm']) or '-'} mm")
    print(f"  spacing btw slices   {_fmt_mm(s['spacing_between_slices_mm']) or '-'} mm")
    print(f"  corrected instances  {s['corrected_instances']}")
    if s["findings"]:
        print("  findings:")
        for f in s["findings"]:
            print(f"    {f['severity']:<9} {f['code']} x{f.get('count', 1)}: {f['message']}")


def cmd_series(args: argparse.Namespace) -> int:
    cfg = _config(args)
    from scp import models
    from storage.queries import IndexQueries, NotFound

    sessions = _open_index(cfg)
    queries = IndexQueries(cfg.series.quiet_seconds, cfg.tolerance)
    with sessions() as session:
        if getattr(args, "uid", None):
            try:
                item = queries.get_series(session, args.uid)
            except NotFound as exc:
                print(f"spacing-scp: {exc}", file=sys.stderr)
                return EXIT_USAGE
            if args.json:
                print(json.dumps(models.dump(models.Series, item), indent=2))
            else:
                _print_series_detail(item)
            return EXIT_OK
        items, _ = queries.list_series(
            session,
            study_instance_uid=getattr(args, "study", None),
            modality=getattr(args, "modality", None),
            code=getattr(args, "code", None),
            limit=args.limit,
        )
    if args.json:
        print(json.dumps(models.dump_list(models.Series, items), indent=2))
    else:
        print(_table([_series_row(s) for s in items], SERIES_COLUMNS))
    return EXIT_OK


def cmd_check(args: argparse.Namespace) -> int:
    cfg = load_config(args.config) if args.config else load_config(None)
    from scp import models
    from scp.services.check import run_check

    try:
        items, series, skipped = run_check(
            args.paths, cfg.spacing_policy, cfg.node.ae_title, cfg.tolerance, args.fix
        )
    except (FileNotFoundError, ValueError) as exc:
        print(f"spacing-scp check: {exc}", file=sys.stderr)
        return EXIT_USAGE
    invalid = any(i.verdict == "invalid" for i in items)
    if args.json:
        report = {
            "instances": [i.to_dict() for i in items],
            "series": series,
            "skipped_non_dicom": skipped,
        }
        print(json.dumps(models.dump(models.CheckReport, report), indent=2))
    else:
        rows = []
        for i in items:
            d = i.to_dict()
            ps = d["pixel_spacing"]
            rows.append(
                {
                    "file": str(i.path),
                    "verdict": d["verdict"],
                    "received_ps": d["received_pixel_spacing"],
                    "spacing_mm": (
                        f"{_fmt_mm(ps['row_mm'])}\\{_fmt_mm(ps['column_mm'])}"
                        if ps["row_mm"] is not None
                        else ""
                    ),
                    "source": ps["source"],
                    "codes": ",".join(sorted({f["code"] for f in d["findings"]})),
                }
            )
        print(_table(rows, ["file", "verdict", "received_ps", "spacing_mm", "source", "codes"]))
        print()
        print(_table([_series_row(s) for s in series], SERIES_COLUMNS))
        print(
            f"\n{len(items)} instances, {len(series)} series"
            + (f", {skipped} non-DICOM files skipped" if skipped else "")
            + (f"; corrected copies in {args.fix}" if args.fix else "")
        )
    return EXIT_PROBLEM if invalid else EXIT_OK


def cmd_reindex(args: argparse.Namespace) -> int:
    from scp.services.reindex import run_cli

    return run_cli(_config(args))


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    cfg = _config(args)
    from storage.db import make_engine, upgrade

    if cfg.database_url.startswith("sqlite"):
        cfg.data_dir.mkdir(parents=True, exist_ok=True)
    before, after = upgrade(make_engine(cfg.database_url))
    print(f"database schema: {before or 'empty'} -> {after}")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spacing-scp",
        description="DICOM storage node that checks, corrects and indexes pixel/slice spacing.",
    )
    parser.add_argument("--version", action="version", version=f"spacing-scp {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="run the node (DICOM listener)")
    _add_config_options(p)
    p.add_argument("--port", type=int, help="DICOM port (default 11112)")
    p.add_argument("--host", help="address to listen on (default 0.0.0.0)")
    p.add_argument("--ae-title", help="the node's AE title (default SPACING_SCP)")
    p.add_argument("--http-port", type=int, help="HTTP API port (default 8080)")
    p.add_argument("--worker", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--listen-fd", type=int, default=None, help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("echo", help="C-ECHO a node (health check)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=int(os.environ.get("SPACING_SCP_NODE_PORT", 11112)))
    p.add_argument(
        "--called-ae-title", default=os.environ.get("SPACING_SCP_NODE_AE_TITLE", "SPACING_SCP")
    )
    p.add_argument("--calling-ae-title", default="ECHOSCU")
    p.add_argument("--timeout", type=float, default=10.0)
    p.set_defaults(func=cmd_echo)

    p = sub.add_parser("check", help="run the spacing pipeline on files and folders")
    p.add_argument("paths", nargs="+", type=Path, help="DICOM files or folders (recursive)")
    p.add_argument("--config", type=Path, help="TOML configuration file (policy, swap rules)")
    p.add_argument(
        "--json", action="store_true", help='JSON: {"instances": [...], "series": [...]}'
    )
    p.add_argument("--fix", type=Path, metavar="OUTDIR", help="write corrected copies here")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("series", help="series spacing summaries (list, show UID)")
    _add_config_options(p)
    p.add_argument("--json", action="store_true", help="JSON for scripts")
    p.add_argument("--limit", type=int, default=1000)
    p.add_argument("--study", help="only this StudyInstanceUID")
    p.add_argument("--modality", help="only this Modality")
    p.add_argument("--code", help="only series with this finding code")
    p.set_defaults(func=cmd_series)
    ssub = p.add_subparsers(dest="series_command")
    lp = ssub.add_parser("list", help="list series (the default)")
    sp = ssub.add_parser("show", help="one series in detail")
    sp.add_argument("uid", help="SeriesInstanceUID")
    for q in (lp, sp):
        _add_config_options(q)
        q.add_argument("--json", action="store_true", help="JSON for scripts")
        q.add_argument("--limit", type=int, default=1000)
        q.set_defaults(func=cmd_series)
    lp.add_argument("--study", help="only this StudyInstanceUID")
    lp.add_argument("--modality", help="only this Modality")
    lp.add_argument("--code", help="only series with this finding code")

    for what, helptext in (
        ("studies", "list indexed studies"),
        ("instances", "list indexed instances"),
    ):
        p = sub.add_parser(what, help=helptext)
        _add_config_options(p)
        p.add_argument("--json", action="store_true", help="JSON for scripts")
        p.add_argument("--limit", type=int, default=1000)
        if what == "instances":
            p.add_argument("--series", help="only this SeriesInstanceUID")
        p.set_defaults(func=lambda a, w=what: _list(a, w))

    from scp.cli.forward import add_forward_parser

    add_forward_parser(sub, _add_config_options, _config)

    p = sub.add_parser("reindex", help="rebuild the index from the file store")
    _add_config_options(p)
    p.set_defaults(func=cmd_reindex)

    p = sub.add_parser("db", help="database schema")
    dbsub = p.add_subparsers(dest="db_command", required=True)
    p = dbsub.add_parser("upgrade", help="apply pending schema migrations")
    _add_config_options(p)
    p.set_defaults(func=cmd_db_upgrade)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"spacing-scp: configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:
        from storage.db import SchemaOutdated

        if isinstance(exc, SchemaOutdated):
            print(f"spacing-scp: {exc}", file=sys.stderr)
            return EXIT_USAGE
        raise


if __name__ == "__main__":
    sys.exit(main())
