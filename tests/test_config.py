"""Configuration: defaults, TOML, environment, errors that name the key."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from scp.config import ConfigError, load_config

REPO = Path(__file__).resolve().parents[1]


def test_embedded_defaults() -> None:
    cfg = load_config(None, environ={})
    assert cfg.node.ae_title == "SPACING_SCP"
    assert cfg.node.port == 11112
    assert cfg.node.host == "0.0.0.0"
    assert cfg.http.host == "127.0.0.1" and cfg.http.port == 8080
    assert cfg.data_dir == (Path.cwd() / "spacing-data").resolve()
    assert cfg.database_url.endswith("spacing-data/index.sqlite3")


def test_shipped_config_file_is_valid_and_matches_defaults() -> None:
    cfg = load_config(REPO / "config" / "spacing-scp.toml", environ={})
    default = load_config(None, environ={})
    assert cfg.node == default.node
    assert cfg.policy == default.policy
    assert cfg.http == default.http
    # relative paths resolve against the configuration file's folder
    assert cfg.data_dir == (REPO / "config" / "spacing-data").resolve()


def test_env_overrides_file(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[node]\nport = 104\n[storage]\ndata_dir = "d"\n')
    cfg = load_config(
        path,
        environ={"SPACING_SCP_NODE_PORT": "2104", "SPACING_SCP_POLICY_ANNOTATE_PRIVATE": "false"},
    )
    assert cfg.node.port == 2104
    assert cfg.policy.annotate_private is False
    assert cfg.data_dir == tmp_path / "d"


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[node]\nprot = 1\n", "node.prot"),
        ("[node]\nport = 'abc'\n", "node.port"),
        ("[node]\nport = 70000\n", "node.port"),
        ("[node]\nae_title = 'THIS_TITLE_IS_TOO_LONG'\n", "node.ae_title"),
        ("[policy]\non_suspect_reversed = 'maybe'\n", "policy.on_suspect_reversed"),
        ("[nodes]\nport = 1\n", "nodes"),
        (
            "[[swap_rules]]\nname = 'x'\n[swap_rules.match]\nColour = 'red'\n",
            "swap_rules[0].match.Colour",
        ),
        ("[commitment]\ncommit_when = 'later'\n", "commitment.commit_when"),
        ("[commitment]\npoll_s = 0\n", "commitment.poll_s"),
        ("[query]\nrelational = 'sometimes'\n", "query.relational"),
        ("[[move_destinations]]\nae_title = 'V'\nhost = 'h'\n", "move_destinations[0].port"),
        (
            "[[commitment_peers]]\nae_title = 'M'\nhost = 'h'\nport = 0\n",
            "commitment_peers[0].port",
        ),
        (
            "[[commitment_peers]]\nae_title = 'M'\nhost = 'h'\nport = 1\nhots = 2\n",
            "commitment_peers[0].hots",
        ),
        (
            "[[move_destinations]]\nae_title = 'THIS_TITLE_IS_TOO_LONG'\nhost = 'h'\nport = 1\n",
            "move_destinations[0].ae_title",
        ),
        (
            "[[move_destinations]]\nae_title = 'V'\nhost = 'h'\nport = 1\n"
            "[[move_destinations]]\nae_title = 'V'\nhost = 'i'\nport = 2\n",
            "move_destinations: AE titles must be unique",
        ),
        ("move_destinations = 3\n", "move_destinations"),
        ("[node]\nprocesses = 'many'\n", "node.processes"),
        ("[node]\nprocesses = 0\n", "node.processes"),
        ("[node]\nprocesses = 2.5\n", "node.processes"),
    ],
)
def test_wrong_key_or_value_names_the_key(tmp_path: Path, text: str, key: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=key.replace("[", r"\[").replace("]", r"\]")):
        load_config(path, environ={})


def test_unknown_env_setting_is_an_error() -> None:
    with pytest.raises(ConfigError, match=r"SPACING_SCP_NODE_PROT|node\.prot"):
        load_config(None, environ={"SPACING_SCP_NODE_PROT": "1"})


def test_cli_reports_config_error_with_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[node]\nport = -1\n")
    out = subprocess.run(
        [sys.executable, "-m", "scp", "serve", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert "node.port" in out.stderr


def test_swap_rule_parsed(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(
        '[[swap_rules]]\nname = "CR3"\nattributes = ["PixelSpacing"]\n'
        '[swap_rules.match]\nManufacturer = "ACME*"\ncalling_ae_title = "CR3"\n'
    )
    cfg = load_config(path, environ={})
    [rule] = cfg.spacing_policy.swap_rules
    assert rule.match == {"Manufacturer": "ACME*", "calling_ae_title": "CR3"}


def test_every_key_has_its_environment_variable_tables_included() -> None:
    cfg = load_config(
        None,
        environ={
            "SPACING_SCP_LOGGING_LEVEL": "debug",
            "SPACING_SCP_SECURITY_ALLOWED_CALLING_AE_TITLES": "CT1, MR1",
            "SPACING_SCP_SECURITY_CALLING_AE_HOSTS": '{"CT1": ["10.0.0.0/24"], "MR1": "::1"}',
            "SPACING_SCP_DESTINATIONS": (
                '[{"name": "cloud", "type": "stow-rs", "url": "https://a.example/dw"}]'
            ),
            "SPACING_SCP_SWAP_RULES": '[{"name": "CR3", "match": {"Manufacturer": "ACME*"}}]',
            "SPACING_SCP_REQUIRE_DCMTK": "1",  # not a section: the test suite's own
        },
    )
    assert cfg.logging.level == "DEBUG"
    assert cfg.security.allowed_calling_ae_titles == ["CT1", "MR1"]
    assert cfg.security.calling_ae_hosts == {"CT1": ["10.0.0.0/24"], "MR1": ["::1"]}
    assert [d.url for d in cfg.destinations] == ["https://a.example/dw"]
    assert [r.name for r in cfg.swap_rules] == ["CR3"]


@pytest.mark.parametrize(
    ("environ", "words"),
    [
        ({"SPACING_SCP_NODE_PORT": "x"}, ["SPACING_SCP_NODE_PORT", "node.port"]),
        (
            {"SPACING_SCP_SECURITY_CALLING_AE_HOSTS": "CT1"},
            ["SPACING_SCP_SECURITY_CALLING_AE_HOSTS", "JSON"],
        ),
        ({"SPACING_SCP_DESTINATIONS": '[{"name": "x"}]'}, ["destinations[0].ae_title: required"]),
        ({"SPACING_SCP_NODES_PORT": "1"}, None),  # not a section: ignored, as before
    ],
)
def test_environment_errors_are_one_line_naming_the_key(
    environ: dict[str, str], words: list[str] | None
) -> None:
    if words is None:
        load_config(None, environ=environ)
        return
    with pytest.raises(ConfigError) as err:
        load_config(None, environ=environ)
    message = str(err.value)
    assert "\n" not in message
    for word in words:
        assert word in message


def test_the_published_json_schema_is_current() -> None:
    from scp.config import json_schema

    published = json.loads((REPO / "docs" / "config.schema.json").read_text())
    assert published == json_schema(), "regenerate: python -m scp.config schema"
    assert set(published["properties"]) >= {"node", "http", "destinations", "swap_rules"}
    assert published["additionalProperties"] is False


def test_processes_auto_is_one_per_core_with_the_indexer_counted(tmp_path: Path) -> None:
    """``[node] processes = "auto"`` (issue 14): one receiving process per core the node may
    run on, less one for the indexer process; 1 on an ephemeral port; an integer as is."""
    import os

    cores = len(os.sched_getaffinity(0))
    cfg = load_config(None, environ={"SPACING_SCP_NODE_PROCESSES": "AUTO"})
    assert cfg.node.processes == "auto"
    assert cfg.node.receiving_processes == max(1, cores - 1)
    # the start-up log says what "auto" came to
    assert cfg.effective()["node"]["processes"] == f"auto ({max(1, cores - 1)})"
    inline = load_config(
        None, environ={}, overrides={"node.processes": "auto", "node.indexer": "inline"}
    )
    assert inline.node.receiving_processes == cores
    ephemeral = load_config(None, environ={}, overrides={"node.processes": "auto", "node.port": 0})
    assert ephemeral.node.receiving_processes == 1
    path = tmp_path / "c.toml"
    path.write_text("[node]\nprocesses = 3\n")
    assert load_config(path, environ={}).node.receiving_processes == 3
    assert load_config(None, environ={"SPACING_SCP_NODE_PROCESSES": " 2 "}).node.processes == 2
