"""``.ci/run`` stops every service it started, whether CI passes or fails (issue 16)."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[1]
PGBIN = sorted(glob.glob("/usr/lib/postgresql/*/bin"))


def _accepts(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.skipif(not PGBIN, reason="no PostgreSQL server binaries (.ci/postgres.sh)")
def test_ci_run_stops_the_postgresql_server_it_started_when_a_step_fails(tmp_path: Path) -> None:
    fake = tmp_path / "bin"
    fake.mkdir()
    # dciodvfy present (no apt-get), then the first pip step fails: CI ends with an error.
    (fake / "dciodvfy").write_text("#!/bin/sh\nexit 0\n")
    (fake / "pip").write_text("#!/bin/sh\necho 'pip: failing on purpose' >&2\nexit 7\n")
    for tool in fake.iterdir():
        tool.chmod(0o755)
    pgdata = Path("/tmp") / f"spacing-scp-pg-ci-{uuid.uuid4().hex[:8]}"  # postgres reads it
    port = free_port()
    env = {
        **os.environ,
        "PATH": f"{fake}:{os.environ['PATH']}",
        "PGDATA": str(pgdata),
        "PGPORT": str(port),
    }
    env.pop("SPACING_SCP_CI_PGDATA", None)
    try:
        done = subprocess.run(
            ["bash", str(ROOT / ".ci" / "run")],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert done.returncode == 7, done.stderr[-2000:]
        assert (pgdata / "server.log").is_file(), "the server was never started"
        assert not (pgdata / "postmaster.pid").exists(), "the server still runs"
        assert not _accepts(port)
    finally:
        if (pgdata / "postmaster.pid").exists():
            subprocess.run(
                ["bash", str(ROOT / ".ci" / "postgres.sh"), "stop"], env=env, check=False
            )
        shutil.rmtree(pgdata, ignore_errors=True)
