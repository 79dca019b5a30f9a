"""The index on SQLite and on a real PostgreSQL server: migrations, concurrency, same answers."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from alembic import command
from sqlalchemy import select

from scp import status
from storage.db import alembic_config, current_revision, head_revision, make_engine
from storage.models import Instance, Series
from tests.conftest import make_config, send_files
from tests.series_builders import regular, write_series
from tests.test_series_api import series as api_series


def _node(node_factory: Callable[..., Any], tmp_path: Path, url: str) -> Any:
    cfg = make_config(tmp_path / "data", storage={"database_url": url})
    return node_factory(cfg)


def test_store_resend_and_series_on_each_backend(
    node_factory: Callable[..., Any], tmp_path: Path, database_url: str
) -> None:
    node = _node(node_factory, tmp_path, database_url)
    positions = regular(24)
    del positions[10]
    uid, files = write_series(tmp_path / "s", positions)
    halves = [files[0::2], files[1::2]]
    results: list[Any] = []
    threads = [
        threading.Thread(target=lambda h=h: results.extend(send_files(node.port, h)))
        for h in halves
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(results) == 23 and all(r.status == status.SUCCESS for r in results)
    assert send_files(node.port, files[:1])[0].status == status.SUCCESS  # a resend
    with node.sessions() as s:
        assert len(s.scalars(select(Instance)).all()) == 23
        [ser] = s.scalars(select(Series)).all()
        assert ser.instance_count == 23
    summary = api_series(node, uid)
    assert summary["slice_spacing"]["mm"] == 1.25
    assert summary["slice_spacing"]["missing_slices"] == 1
    assert "SLICE_MISSING" in {f["code"] for f in summary["findings"]}


def test_migrations_and_outdated_schema(tmp_path: Path, database_url: str) -> None:
    engine = make_engine(database_url)
    command.upgrade(alembic_config(engine), "0001")
    assert current_revision(engine) == "0001"
    if head_revision() != "0001":
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "scp",
                "serve",
                "--database-url",
                database_url,
                "--data-dir",
                str(tmp_path / "d"),
                "--port",
                "0",
                "--http-port",
                "0",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 2
        assert "spacing-scp db upgrade" in out.stderr
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "scp",
            "db",
            "upgrade",
            "--database-url",
            database_url,
            "--data-dir",
            str(tmp_path / "d"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert current_revision(engine) == head_revision()
    command.downgrade(alembic_config(engine), "base")
    assert current_revision(engine) is None
    engine.dispose()
