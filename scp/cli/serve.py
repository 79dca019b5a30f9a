"""``spacing-scp serve`` (the node and its extra receiving processes) and ``spacing-scp
echo`` (C-ECHO, PS3.7 9.1.5: the container's health check)."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
from typing import Any

from scp.cli.common import EXIT_OK, EXIT_PROBLEM, CliError, configuration
from scp.cli.parsing import INDEX_OPTIONS, Level, option
from scp.config import ConfigError, integer, number
from scp.metrics import METRICS

SERVE_OPTIONS = (
    *INDEX_OPTIONS,
    option("--port", type=integer, metavar="N", help="DICOM port (default 11112)"),
    option("--host", help="address to listen on (default 0.0.0.0)"),
    option("--ae-title", metavar="TITLE", help="the node's AE title (default SPACING_SCP)"),
    option("--http-port", type=integer, metavar="N", help="HTTP API port (default 8080)"),
    # An extra receiving process of [node] processes (see _start_workers).
    option("--worker", type=int, default=0, help=argparse.SUPPRESS),
    option("--listen-fd", type=int, help=argparse.SUPPRESS),
    # The indexer process of [node] indexer = "process" (see _spawn).
    option("--indexer-process", action="store_true", default=False, help=argparse.SUPPRESS),
    # The read end of the first process's lifeline pipe (see _watch_lifeline).
    option("--lifeline-fd", type=int, help=argparse.SUPPRESS),
)

ECHO_OPTIONS = (
    option("--host", default="127.0.0.1", help="the node's address (127.0.0.1)"),
    option(
        "--port", type=integer, metavar="N", help="the node's port ($SPACING_SCP_NODE_PORT, 11112)"
    ),
    option(
        "--called-ae-title",
        metavar="TITLE",
        help="the node's AE title ($SPACING_SCP_NODE_AE_TITLE, SPACING_SCP)",
    ),
    option("--calling-ae-title", default="ECHOSCU", metavar="TITLE", help="ours (ECHOSCU)"),
    option("--timeout", type=number, default=10.0, metavar="S", help="seconds per step (10)"),
)


def register(top: Level) -> None:
    """Add ``serve`` and ``echo``."""
    top.command("serve", "run the node (DICOM listener)", SERVE_OPTIONS, cmd_serve)
    top.command("echo", "C-ECHO a node (health check)", ECHO_OPTIONS, cmd_echo)


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


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the node until SIGTERM/SIGINT; 1 when one of its other processes failed.

    The first process spawns, through :mod:`subprocess` (never a bare ``fork``: its
    threads may hold locks) and from the command line :func:`scp.cli.main.main` was given,
    the indexer process (``[node] indexer = "process"``) and the extra receiving processes
    (``[node] processes``).  They stay in its process group and hold the read end of a
    pipe whose write end only the first process has: when it dies, even by SIGKILL, they
    read end-of-file and stop (:func:`_watch_lifeline`), so none outlives it.
    """
    cfg = configuration(args)
    _setup_logging(
        cfg.logging.level, cfg.node.receiving_processes + (cfg.node.indexer == "process")
    )
    from scp.node import IndexerProcess, Node, StartupError

    stop = threading.Event()
    log = logging.getLogger("spacing_scp.node")

    def _on_signal(signum: int, _frame: Any) -> None:
        log.info("%s received: stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    if args.lifeline_fd is not None:
        _watch_lifeline(args.lifeline_fd)
    if args.indexer_process:
        indexer = IndexerProcess(cfg)
        indexer.start()
        stop.wait()
        indexer.stop()
        return EXIT_OK

    worker = int(args.worker or 0)
    external = not worker and cfg.node.indexer == "process"
    try:
        node = Node(
            cfg,
            worker=worker,
            listen_fd=args.listen_fd if worker else None,
            external_indexer=external or bool(worker),
        )
    except StartupError as exc:
        raise CliError(str(exc), EXIT_PROBLEM) from None
    argv = [sys.executable, "-m", "scp", *getattr(args, "argv", sys.argv[1:])]
    children: list[subprocess.Popen[bytes]] = []
    lifeline = os.pipe() if not worker else None
    # the read end stays open here too, for an indexer process started again later
    try:
        if lifeline is not None and external:
            children.append(_spawn(argv, ["--indexer-process"], lifeline[0]))
        try:
            node.start()
        except StartupError as exc:
            node.stop(grace_s=0)  # what started before the failure
            raise CliError(str(exc), EXIT_PROBLEM) from None
        if lifeline is not None:
            fd = node.listening_fd()
            children += [
                _spawn(argv, ["--worker", str(i), "--listen-fd", str(fd)], lifeline[0], fd)
                for i in range(1, cfg.node.receiving_processes)
            ]
    except BaseException:
        if lifeline is not None:
            os.close(lifeline[1])  # the children started so far stop
        for child in children:  # before the one-line error: theirs are not the last lines
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=10)
        raise
    indexer_child = children[0] if external and children else None
    while not stop.wait(1.0):
        for child in children:
            if child.poll() is None:
                continue
            children.remove(child)
            METRICS.process_ended(child.pid)  # its gauges (a destination "down") go with it
            if child is indexer_child and lifeline is not None:
                # the journal keeps every acknowledged instance: a new indexer resumes
                log.error(
                    "indexer process %d exited with %s; restarting it", child.pid, child.returncode
                )
                indexer_child = _spawn(argv, ["--indexer-process"], lifeline[0])
                children.insert(0, indexer_child)
            else:
                log.error("receiving process %d exited with %s", child.pid, child.returncode)
            break
    receivers = [c for c in children if c is not indexer_child]
    for child in receivers:
        child.send_signal(signal.SIGTERM)
    node.stop()
    code = EXIT_OK
    # the indexer stops last: it indexes what every receiving process acknowledged
    for child in [*receivers, *([indexer_child] if indexer_child in children else [])]:
        if child is indexer_child:
            child.send_signal(signal.SIGTERM)
        try:
            # -SIGTERM: stopped before it had set up its handlers (nothing to finish)
            if child.wait(timeout=cfg.node.shutdown_grace_s + 15) not in (0, -signal.SIGTERM):
                code = EXIT_PROBLEM
        except subprocess.TimeoutExpired:
            child.kill()
            code = EXIT_PROBLEM
    if lifeline is not None:
        os.close(lifeline[0])
        os.close(lifeline[1])
    if external:
        # an indexer stopped before it got going leaves records: index them before exiting
        count = node.catch_up()
        if count:
            log.info("indexed %d journal record(s) the indexer process left", count)
    return code


def _spawn(
    argv: list[str], extra: list[str], lifeline_fd: int, *fds: int
) -> subprocess.Popen[bytes]:
    """One of the node's other processes: ``argv`` plus ``extra``, holding the lifeline."""
    return subprocess.Popen(
        [*argv, *extra, "--lifeline-fd", str(lifeline_fd)],
        pass_fds=[lifeline_fd, *fds],
    )


def _watch_lifeline(fd: int) -> None:
    """In a child process: SIGTERM ourselves when the first process is gone (the lifeline
    pipe reads end-of-file once no process holds its write end)."""

    def watch() -> None:
        try:
            while os.read(fd, 1):
                pass
        except OSError:
            pass
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="lifeline", daemon=True).start()


def _env_port() -> int:
    value = os.environ.get("SPACING_SCP_NODE_PORT", "11112")
    try:
        return integer(value)
    except ValueError:
        raise ConfigError(f"SPACING_SCP_NODE_PORT: {value!r} is not an integer") from None


def cmd_echo(args: argparse.Namespace) -> int:
    """C-ECHO the node; 0 on Success (0x0000).  Raises :class:`CliError` (exit 1) without
    association or on another status, (exit 2) for an AE title pynetdicom refuses."""
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

    port = _env_port() if args.port is None else args.port
    called = args.called_ae_title
    if called is None:
        called = os.environ.get("SPACING_SCP_NODE_AE_TITLE", "SPACING_SCP")
    try:
        ae = AE(ae_title=args.calling_ae_title)
        ae.add_requested_context(Verification)
        ae.acse_timeout = ae.network_timeout = ae.dimse_timeout = args.timeout
        assoc = ae.associate(args.host, port, ae_title=called)
    except ValueError as exc:  # an AE title longer than 16 characters, ...
        raise CliError(str(exc)) from None
    if not assoc.is_established:
        raise CliError(f"no association with {args.host}:{port}", EXIT_PROBLEM)
    rsp = assoc.send_c_echo()
    assoc.release()
    code = getattr(rsp, "Status", None)
    if code != 0:
        raise CliError(f"C-ECHO status {code}", EXIT_PROBLEM)
    print("echo: success")
    return EXIT_OK
