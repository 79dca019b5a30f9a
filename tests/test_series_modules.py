"""scp.series stays pure domain code and its modules form a clean DAG.

Pure: no network (pynetdicom), no SQL (sqlalchemy, alembic), no storage, and from ``scp``
only :mod:`scp.pipeline` and :mod:`scp.series` itself (issue 12, the named layers).
"""

from __future__ import annotations

import ast
import graphlib
import subprocess
import sys
from pathlib import Path

import scp.series

PACKAGE = Path(scp.series.__file__).parent
FORBIDDEN_TOP = {"pynetdicom", "sqlalchemy", "alembic", "psycopg", "storage"}


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def test_series_imports_only_pure_modules() -> None:
    for path in sorted(PACKAGE.glob("*.py")):
        for name in _imports(path):
            top = name.split(".")[0]
            assert top not in FORBIDDEN_TOP, f"{path.name} imports {name}"
            if top == "scp":
                assert name.startswith(("scp.pipeline", "scp.series")), f"{path.name}: {name}"


def test_series_modules_form_a_dag() -> None:
    graph = {
        f"scp.series.{path.stem}": {n for n in _imports(path) if n.startswith("scp.series.")}
        for path in PACKAGE.glob("*.py")
        if path.stem != "__init__"
    }
    order = list(graphlib.TopologicalSorter(graph).static_order())  # raises CycleError
    assert set(graph) <= set(order)


def test_importing_series_loads_no_network_sql_or_storage() -> None:
    code = (
        "import sys, scp.series\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        f"{sorted(FORBIDDEN_TOP)!r} or (m.startswith('scp.') and not "
        "m.startswith(('scp.series', 'scp.pipeline'))))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=PACKAGE.parent.parent,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.strip() == ""
