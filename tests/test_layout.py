"""The layout stays as docs/architecture.md draws it: small modules, named rooms, the layers
checked by import-linter (whose contracts live in pyproject.toml)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MAX_LINES = 600
ARCHITECTURE = (REPO / "docs" / "architecture.md").read_text()
README = (REPO / "README.md").read_text()


def _modules() -> list[Path]:
    return sorted(
        p
        for package in ("scp", "storage")
        for p in (REPO / package).rglob("*.py")
        if "migrations" not in p.parts
    )


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(REPO)))
def test_no_module_over_600_lines(path: Path) -> None:
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_LINES, f"{path.relative_to(REPO)} has {lines} lines (at most {MAX_LINES})"


def _packages() -> list[str]:
    return sorted(
        str(p.parent.relative_to(REPO))
        for p in (REPO / "scp").glob("*/__init__.py")
        if p.parent.name != "__pycache__"
    )


@pytest.mark.parametrize("package", _packages())
def test_every_package_has_its_room_in_the_architecture(package: str) -> None:
    assert f"`{package}/" in ARCHITECTURE, f"{package}/ is not described in docs/architecture.md"


def test_readme_layout_names_only_paths_that_exist() -> None:
    section = README.split("## Layout", 1)[1].split("\n## ", 1)[0]
    paths = set(re.findall(r"`((?:scp|storage|bench|docs|tests|config)/[^`*]*)`", section))
    assert paths, "the README's layout table names no paths"
    missing = sorted(p for p in paths if not (REPO / p.rstrip("/")).exists())
    assert not missing, f"README's layout names paths that do not exist: {missing}"


def test_import_contracts_hold() -> None:
    """The same check CI runs: `lint-imports` with the contracts of pyproject.toml."""
    exe = shutil.which("lint-imports") or str(Path(sys.executable).with_name("lint-imports"))
    run = subprocess.run([exe], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
