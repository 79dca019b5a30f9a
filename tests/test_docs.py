"""The README, the configuration reference and the conformance statement follow the code."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pynetdicom import StoragePresentationContexts

from scp import status
from scp.config import _SECTIONS, Destination
from scp.net.ae import ACCEPTED_TRANSFER_SYNTAXES

REPO = Path(__file__).resolve().parents[1]
CONFORMANCE = (REPO / "docs" / "conformance.md").read_text()
README = (REPO / "README.md").read_text()
TOML = (REPO / "config" / "spacing-scp.toml").read_text()


def test_conformance_lists_every_storage_sop_class_and_transfer_syntax() -> None:
    for cx in StoragePresentationContexts:
        assert f"`{cx.abstract_syntax}`" in CONFORMANCE, cx.abstract_syntax
    for ts in ACCEPTED_TRANSFER_SYNTAXES:
        assert f"`{ts}`" in CONFORMANCE, ts


@pytest.mark.parametrize(
    "name", [n for n in dir(status) if n.isupper() and isinstance(getattr(status, n), int)]
)
def test_every_status_code_is_documented(name: str) -> None:
    code = f"0x{getattr(status, name):04X}"
    assert code in CONFORMANCE, f"{name} {code} missing from docs/conformance.md"
    if not name.startswith("FIND_"):
        assert code in README, f"{name} {code} missing from the README's status table"


def _keys() -> list[tuple[str, str]]:
    keys = [(section, name) for section, cls in _SECTIONS.items() for name in cls.model_fields]
    keys += [("destinations", name) for name in Destination.model_fields]
    return keys


@pytest.mark.parametrize(("section", "key"), _keys())
def test_every_configuration_key_is_documented(section: str, key: str) -> None:
    pattern = rf"^#? ?\[{section}\.{key}\]" if key == "filter" else rf"^#? ?{key} = "
    assert re.search(pattern, TOML, re.M), f"{section}.{key} not in the TOML"
    assert f"`{key}`" in README, f"{section}.{key} not in the README"


def test_readme_starts_with_the_two_commands() -> None:
    blocks = re.findall(r"```sh\n(.*?)\n```", README, re.S)
    assert "pip install . && spacing-scp serve" in blocks[0]
    assert "pip install -e '.[test]' && pytest" in blocks[1]
    assert "pytest -q" in (REPO / ".ci" / "run").read_text()
