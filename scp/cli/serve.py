"""``spacing-scp serve`` (the node and its extra receiving processes) and ``spacing-scp
echo`` (C-ECHO, PS3.7 9.1.5: the container's health check)."""

from __future__ import annotations

import argparse
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

SERVE_OPTIONS = (
    *INDEX_OPTIONS,
    option("--port", type=integer, metavar="N", help="DICOM port (default 11112)"),
    option("--host", help="address to listen on (default 0.0.0.0)"),
    option("--ae-title", metavar="TITLE", help="the node's AE title (default SPACING_SCP)"),
    option("--http-port", type=integer, metavar="N", help="HTTP API port (default 8080)"),
    # An extra receiving process of [node] processes (see _start_workers).
    option("--worker", type=int, default=0, help=argparse.SUPPRESS),
    option("--listen-fd", type=int, help=argparse.SUPPRESS),
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
    """Run the node until SIGTERM/SIGINT; 1 when an extra receiving process failed."""
    cfg = configuration(args)
    _setup_logging(cfg.logging.level, cfg.node.processes)
    from scp.node import Node, StartupError

    worker = int(args.worker or 0)
    try:
        node = Node(cfg, worker=worker, listen_fd=args.listen_fd if worker else None)
    except StartupError as exc:
        raise CliError(str(exc), EXIT_PROBLEM) from None
    try:
        node.start()
    except StartupError as exc:
        node.stop(grace_s=0)  # what started before the failure
        raise CliError(str(exc), EXIT_PROBLEM) from None
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
