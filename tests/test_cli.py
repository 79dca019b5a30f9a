"""``spacing-scp``: every command and option, wherever it stands; one-line errors.

The commands run through ``main(argv)`` (and as real subprocesses where stderr and exit
code must be exactly what a shell sees) on a real SQLite data directory that a real node
filled over real associations.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from scp.cli import main
from scp.cli.parsing import TOP_LEVEL
from scp.node import Node
from storage.db import head_revision
from tests.conftest import free_port, make_config, send_files
from tests.dicom_factory import ct_dataset, new_uid, set_raw, write

MR_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
TOP_FLAGS = {"--" + dest.replace("_", "-") for dest in TOP_LEVEL}


@dataclass(frozen=True)
class Indexed:
    """A data directory a node filled (stopped since), and the files it received."""

    data: Path
    inputs: Path
    study_a: str
    study_b: str
    ct_series: str
    mr_series: str
    bad_series: str
    instances: int


@pytest.fixture(scope="module")
def indexed(tmp_path_factory: pytest.TempPathFactory) -> Indexed:
    root = tmp_path_factory.mktemp("indexed")
    study_a, study_b = new_uid(), new_uid()
    ct, mr, bad = new_uid(), new_uid(), new_uid()
    files = []
    for i in range(3):  # study A: a CT series whose Pixel Spacing a swap rule would swap
        ds = ct_dataset(study=study_a, series=ct, pixel_spacing="0.7\\0.5", position=(0, 0, i))
        files.append(write(ds, root / "in" / "ct" / f"{i}.dcm"))
    for i in range(2):  # study A: an MR series
        ds = ct_dataset(study=study_a, series=mr, modality="MR", sop_class=MR_STORAGE)
        files.append(write(ds, root / "in" / "mr" / f"{i}.dcm"))
    ds = ct_dataset(study=study_b, series=bad)  # study B: invalid Pixel Spacing
    set_raw(ds, 0x00280030, "DS", b"0.5mm\\0.5mm")
    files.append(write(ds, root / "in" / "bad" / "0.dcm"))
    node = Node(make_config(root / "data"))
    node.start()
    try:
        assert all(r.status is not None for r in send_files(node.port, files))
    finally:
        node.stop(grace_s=2)
    return Indexed(root / "data", root / "in", study_a, study_b, ct, mr, bad, len(files))


@pytest.fixture(autouse=True)
def _quiet(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # Every series settled at once (the state must not change between two runs), and a
    # working directory without ./spacing-data: without a data option there is no index.
    monkeypatch.setenv("SPACING_SCP_SERIES_QUIET_SECONDS", "0.001")
    monkeypatch.chdir(tmp_path)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


class Workspace:
    """The values a case's ``{name}`` placeholders stand for, fresh for every run of a
    command that writes (a copy of the data directory, folders that do not exist yet)."""

    def __init__(self, indexed: Indexed, root: Path) -> None:
        self.indexed = indexed
        self.root = root
        self.runs = 0

    def values(self, writes: bool) -> dict[str, str]:
        self.runs += 1
        run_dir = self.root / f"run{self.runs}"
        run_dir.mkdir()
        data = self.indexed.data
        if writes:
            data = run_dir / "data"
            shutil.copytree(self.indexed.data, data)
        dest = '[[destinations]]\nname = "pacs"\nae_title = "PACS"\nhost = "127.0.0.1"\nport = 1\n'
        (run_dir / "dest.toml").write_text(dest)
        (run_dir / "full.toml").write_text(f'[storage]\ndata_dir = "{data}"\n\n{dest}')
        (run_dir / "bad.toml").write_text("[node]\nport = -1\n")
        (run_dir / "swap.toml").write_text(
            '[[swap_rules]]\nname = "ACME"\n[swap_rules.match]\nManufacturer = "ACME"\n'
        )
        i = self.indexed
        return {
            "data": str(data),
            "fresh": str(run_dir / "fresh"),
            "cfg_full": str(run_dir / "full.toml"),
            "cfg_dest": str(run_dir / "dest.toml"),
            "cfg_bad": str(run_dir / "bad.toml"),
            "cfg_swap": str(run_dir / "swap.toml"),
            "inputs": str(i.inputs / "ct"),
            "study_b": i.study_b,
            "ct": i.ct_series,
            "mr": i.mr_series,
        }


@dataclass(frozen=True)
class Case:
    """An option of a command: ``path`` the command's words, ``args`` its positional
    arguments, ``fixed`` other options it needs (at the end); ``writes``: every run on a
    fresh copy; ``code``: the exit code with the option; ``baseline``: run without the
    option too, which must answer differently (the option counted)."""

    path: tuple[str, ...]
    option: tuple[str, ...]
    args: tuple[str, ...] = ()
    fixed: tuple[str, ...] = ()
    writes: bool = False
    code: int = 0
    baseline: bool = True

    @property
    def id(self) -> str:
        return " ".join((*self.path, self.option[0], *(["+fixed"] if self.fixed else [])))


def _index_cases(path: tuple[str, ...], **kw: object) -> list[Case]:
    """``--data-dir``, ``--database-url`` and ``--config`` for a command that reads."""
    return [
        Case(path, ("--data-dir", "{data}"), **kw),  # type: ignore[arg-type]
        Case(path, ("--database-url", "sqlite:///{data}/index.sqlite3"), **kw),  # type: ignore[arg-type]
        Case(path, ("--config", "{cfg_full}"), **kw),  # type: ignore[arg-type]
    ]


DATA = ("--data-dir", "{data}")
REQUEUE = ("--series", "{ct}", "--destination", "pacs")
CASES = [
    *_index_cases(("series", "list")),
    *(
        Case(("series", "list"), opt, fixed=DATA)
        for opt in (
            ("--json",),
            ("--limit", "1"),
            ("--study", "{study_b}"),
            ("--modality", "MR"),
            ("--code", "PIXEL_SPACING_INVALID"),
        )
    ),
    *_index_cases(("series", "show"), args=("{ct}",)),
    Case(("series", "show"), ("--json",), args=("{ct}",), fixed=DATA),
    *_index_cases(("studies",)),
    Case(("studies",), ("--json",), fixed=DATA),
    Case(("studies",), ("--limit", "1"), fixed=DATA),
    *_index_cases(("instances",)),
    Case(("instances",), ("--json",), fixed=DATA),
    Case(("instances",), ("--limit", "1"), fixed=DATA),
    Case(("instances",), ("--series", "{mr}"), fixed=DATA),
    *_index_cases(("forward", "status")),
    Case(("forward", "status"), ("--json",), fixed=DATA),
    *_index_cases(("forward", "retry"), writes=True),
    Case(("forward", "retry"), ("--dead",), fixed=DATA, writes=True),
    Case(("forward", "retry"), ("--destination", "nowhere"), fixed=DATA, writes=True, code=2),
    Case(("forward", "requeue"), ("--config", "{cfg_full}"), fixed=REQUEUE, writes=True),
    Case(("forward", "requeue"), DATA, fixed=(*REQUEUE, "--config", "{cfg_dest}"), writes=True),
    Case(
        ("forward", "requeue"),
        ("--database-url", "sqlite:///{data}/index.sqlite3"),
        fixed=(*REQUEUE, "--config", "{cfg_dest}"),
        writes=True,
    ),
    *(
        Case(
            ("forward", "requeue"),
            opt,
            fixed=(*rest, "--config", "{cfg_dest}", *DATA),
            writes=True,
        )
        for opt, rest in (
            (REQUEUE[:2], REQUEUE[2:]),
            (REQUEUE[2:], REQUEUE[:2]),
        )
    ),
    Case(("reindex",), DATA, writes=True),
    Case(("reindex",), ("--config", "{cfg_full}"), writes=True),
    Case(("reindex",), ("--database-url", "sqlite:///{fresh}.sqlite3"), fixed=DATA, writes=True),
    Case(("db", "upgrade"), DATA, writes=True),
    Case(("db", "upgrade"), ("--config", "{cfg_full}"), writes=True),
    Case(
        ("db", "upgrade"),
        ("--database-url", "sqlite:///{fresh}.sqlite3"),
        fixed=DATA,
        writes=True,
    ),
    # serve: only wrong values (a right one would start the node, see test_serve_and_echo)
    Case(("serve",), ("--config", "{cfg_bad}"), code=2, baseline=False),
    Case(("serve",), ("--data-dir", ""), code=2, baseline=False),
    Case(("serve",), ("--database-url", "mysql://x"), code=2, baseline=False),
    Case(("check",), ("--json",), args=("{inputs}",)),
    Case(("check",), ("--config", "{cfg_swap}"), args=("{inputs}",)),
    Case(("check",), ("--fix", "{fresh}"), args=("{inputs}",), writes=True),
]


def placements(case: Case) -> dict[str, list[str]]:
    """Every place the option may stand: before the command (the index options), before
    each subcommand, before the positional arguments, after them, at the very end."""
    opt, path, args, fixed = list(case.option), list(case.path), list(case.args), list(case.fixed)
    out: dict[str, list[str]] = {}
    if opt[0] in TOP_FLAGS:
        out["before the command"] = [*opt, *path, *args, *fixed]
    for i in range(1, len(path)):
        out[f"before {path[i]}"] = [*path[:i], *opt, *path[i:], *args, *fixed]
    out["after the command"] = [*path, *opt, *args, *fixed]
    if args:
        out["after the arguments"] = [*path, *args, *opt, *fixed]
    if fixed:
        out["at the end"] = [*path, *args, *fixed, *opt]
    return out


def _run_case(
    capsys: pytest.CaptureFixture[str], space: Workspace, case: Case, argv: list[str]
) -> tuple[int, str, str]:
    values = space.values(case.writes)
    code, out, err = run(capsys, *(a.format(**values) for a in argv))
    for name in ("fresh", "data", "cfg_full", "cfg_dest", "cfg_bad", "cfg_swap"):
        mark = "{" + name + "}"
        out, err = out.replace(values[name], mark), err.replace(values[name], mark)
    return code, out, err


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_option_counts_wherever_it_stands(
    case: Case, indexed: Indexed, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    space = Workspace(indexed, tmp_path)
    results = {
        where: _run_case(capsys, space, case, argv) for where, argv in placements(case).items()
    }
    first = next(iter(results.values()))
    assert first[0] == case.code, first
    assert first[1] or first[2]
    for where, result in results.items():
        assert result == first, f"{where}: {result} != {first}"
    if case.code == 2:
        assert first[2].count("\n") == 1 and not first[1], first
    if case.baseline:
        without = [*case.path, *case.args, *case.fixed]
        assert _run_case(capsys, space, case, without)[:2] != first[:2]


def test_filters_and_formats_answer_what_they_say(
    indexed: Indexed, capsys: pytest.CaptureFixture[str]
) -> None:
    data = ["--data-dir", str(indexed.data)]
    code, out, _ = run(capsys, "series", "--json", "--study", indexed.study_b, "list", *data)
    assert code == 0 and [s["series_instance_uid"] for s in json.loads(out)] == [indexed.bad_series]
    code, out, _ = run(capsys, "series", "--modality", "MR", "--json", *data)  # list: the default
    assert [s["series_instance_uid"] for s in json.loads(out)] == [indexed.mr_series]
    code, out, _ = run(capsys, *data, "instances", "--json", "--series", indexed.mr_series)
    assert len(json.loads(out)) == 2
    code, out, _ = run(capsys, "studies", "--json", "--limit", "1", *data)
    assert len(json.loads(out)) == 1
    code, out, _ = run(capsys, "series", "--config", "nothing.toml", "show", indexed.ct_series)
    assert code == 2  # the --config before show counts (today it is read, and missing)
    code, out, _ = run(capsys, "series", *data, "show", indexed.ct_series)
    assert code == 0 and "3 instances" in out
    # Given twice, the last one counts (as argparse does on one level).
    code, out, _ = run(capsys, "series", "--limit", "1", "list", "--limit", "2", "--json", *data)
    assert len(json.loads(out)) == 2


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["series", "--study", "1.2", "show", "1.2"], "--study does not apply"),
        (["series", "--limit", "1", "show", "1.2"], "--limit does not apply"),
        (["forward", "--dead", "status"], "--dead does not apply"),
        (["--data-dir", "x", "check", "y"], "--data-dir does not apply"),
        (["--config", "x", "echo"], "--config does not apply"),
        (["--json", "studies"], "unrecognized arguments: --json"),
        (["forward", "requeue", "--series", "1.2"], "--destination is required"),
        (["db"], "required: COMMAND"),
        (["studies", "--data"], "unrecognized arguments: --data"),  # no abbreviations
    ],
)
def test_misplaced_or_missing_options_are_usage_errors(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, *argv)
    assert code == 2 and not out and message in err and err.count("\n") == 1, err


READERS = [
    ["series", "list"],
    ["series", "show", "1.2.3"],
    ["studies"],
    ["instances", "--series", "1.2.3"],
    ["forward", "status"],
    ["forward", "retry", "--dead"],
    ["forward", "requeue", "--series", "1.2.3", "--destination", "pacs"],
]


@pytest.mark.parametrize("argv", READERS, ids=[" ".join(a[:2]) for a in READERS])
@pytest.mark.parametrize("folder", ["empty", "missing", "empty file"])
def test_no_index_is_one_line_and_creates_nothing(
    argv: list[str], folder: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    if folder != "missing":
        data.mkdir()
    if folder == "empty file":
        (data / "index.sqlite3").touch()
    before = sorted(p.name for p in data.iterdir()) if data.exists() else None
    config = tmp_path / "dest.toml"
    config.write_text('[[destinations]]\nname = "pacs"\nae_title = "P"\nhost = "h"\nport = 1\n')
    code, out, err = run(capsys, *argv, "--data-dir", str(data), "--config", str(config))
    assert code == 2 and not out
    assert err.count("\n") == 1 and f"data directory {data}" in err, err
    assert "`spacing-scp serve`" in err and "`spacing-scp db upgrade`" in err
    assert (sorted(p.name for p in data.iterdir()) if data.exists() else None) == before
    if folder == "empty file":
        assert (data / "index.sqlite3").stat().st_size == 0


def test_no_index_in_an_empty_postgresql_database(
    postgres_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "series", "list", "--database-url", postgres_url)
    assert code == 2 and "no index at postgresql://" in err and "db upgrade" in err, err
    assert run(capsys, "db", "upgrade", "--database-url", postgres_url)[0] == 0
    code, out, err = run(capsys, "--database-url", postgres_url, "series", "--json")
    assert (code, out) == (0, "[]\n"), err


def _shell(
    *argv: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "scp", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), **(env or {})},
    )


def test_expected_failures_are_one_line_without_traceback(tmp_path: Path) -> None:
    def one_line(out: subprocess.CompletedProcess[str], code: int, text: str) -> None:
        assert out.returncode == code, out.stderr
        assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr, out.stderr
        assert out.stderr.startswith("spacing-scp") and text in out.stderr, out.stderr

    one_line(_shell("series", "list", cwd=tmp_path), 2, "no index at")
    assert not (tmp_path / "spacing-data").exists()
    (tmp_path / "bad.toml").write_text("[node]\nport = -1\n")
    one_line(_shell("studies", "--config", "bad.toml", cwd=tmp_path), 2, "node.port")
    one_line(_shell("--config", "bad.toml", "serve", cwd=tmp_path), 2, "node.port")
    (tmp_path / "folder.toml").mkdir()
    one_line(_shell("studies", "--config", "folder.toml", cwd=tmp_path), 2, "cannot read")
    (tmp_path / "latin1.toml").write_bytes(b"# \xe9\n")
    one_line(_shell("studies", "--config", "latin1.toml", cwd=tmp_path), 2, "not UTF-8")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "index.sqlite3").write_bytes(b"not a database" * 100)
    one_line(_shell("studies", "--data-dir", "junk", cwd=tmp_path), 1, "database error")
    one_line(_shell("check", "nope", cwd=tmp_path), 2, "no such file")
    one_line(_shell("reindex", "--data-dir", "nowhere", cwd=tmp_path), 2, "no data directory")
    assert not (tmp_path / "nowhere").exists()
    one_line(_shell("series", "--json", "lst", cwd=tmp_path), 2, "invalid choice: 'lst'")
    bad_env = {"SPACING_SCP_NODE_PORT": "abc"}
    one_line(_shell("echo", cwd=tmp_path, env=bad_env), 2, "SPACING_SCP_NODE_PORT")
    assert _shell("--help", cwd=tmp_path, env=bad_env).returncode == 0


def _listening(port: int) -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", port))
    sock.listen()
    return sock


#: Every start-up failure of ``serve`` (docs/operations.md lists them): the case, the
#: setup (tmp_path, DICOM port, HTTP port -> extra arguments, environment), the exit code
#: and what the one line says.
START_UP_FAILURES = [
    ("DICOM port in use", "dicom-busy", 1, "DICOM port {port} on 127.0.0.1: already in use"),
    ("HTTP port in use", "http-busy", 1, "HTTP port {http} on 127.0.0.1: already in use"),
    ("data directory under a file", "data-file", 1, "data directory {tmp}/file/data is not"),
    ("bad environment value", "env", 2, "SPACING_SCP_NODE_MAX_ASSOCIATIONS: node.max_"),
    ("database unreachable", "db-down", 1, "database error: "),
]


@pytest.mark.parametrize(
    ("case", "code", "text"),
    [(c, code, t) for _, c, code, t in START_UP_FAILURES],
    ids=[name for name, *_ in START_UP_FAILURES],
)
def test_serve_start_up_failures_are_one_line(
    tmp_path: Path, case: str, code: int, text: str
) -> None:
    port, http = free_port(), free_port()
    data = tmp_path / "data"
    env = {"SPACING_SCP_STORAGE_MIN_FREE_MB": "0"}
    held: list[socket.socket] = []
    if case == "dicom-busy":
        held.append(_listening(port))
    elif case == "http-busy":
        held.append(_listening(http))
    elif case == "data-file":
        (tmp_path / "file").write_text("not a folder")
        data = tmp_path / "file" / "data"
    elif case == "env":
        env["SPACING_SCP_NODE_MAX_ASSOCIATIONS"] = "8\n"
    elif case == "db-down":
        env["SPACING_SCP_STORAGE_DATABASE_URL"] = f"postgresql://nobody@127.0.0.1:{free_port()}/x"
    try:
        out = _shell(
            *("serve", "--host", "127.0.0.1", "--port", str(port), "--http-port", str(http)),
            *("--data-dir", str(data)),
            cwd=tmp_path,
            env=env,
        )
    finally:
        for sock in held:
            sock.close()
    assert out.returncode == code, out.stderr
    assert "Traceback" not in out.stderr, out.stderr
    errors = [line for line in out.stderr.splitlines() if line.startswith("spacing-scp")]
    assert errors == [out.stderr.splitlines()[-1]], out.stderr
    expected = text.format(port=port, http=http, tmp=tmp_path)
    assert errors[0].startswith("spacing-scp serve: ") and expected in errors[0], out.stderr


def test_serve_and_echo_take_their_options(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "node.toml"
    config.write_text(
        '[storage]\nmin_free_mb = 0\n[security]\nallowed_calling_ae_titles = ["ECHOX"]\n'
    )
    port, http_port, data = free_port(), free_port(), tmp_path / "data"
    serve = [
        *("--config", str(config), "--data-dir", str(data), "serve"),
        *("--host", "127.0.0.1", "--port", str(port), "--http-port", str(http_port)),
        *("--ae-title", "NODEX"),
    ]
    log = open(tmp_path / "node.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, "-m", "scp", *serve], stdout=log, stderr=log)
    echo = [
        *("echo", "--host", "127.0.0.1", "--port", str(port)),
        *("--called-ae-title", "NODEX", "--calling-ae-title", "ECHOX", "--timeout", "5"),
    ]
    try:
        deadline = time.monotonic() + 30
        while run(capsys, *echo)[0] != 0:
            assert proc.poll() is None and time.monotonic() < deadline, "node did not start"
            time.sleep(0.2)
        assert run(capsys, *echo)[1] == "echo: success\n"
        # The node refuses another calling or called AE title: each option counted.
        code, _, err = run(capsys, *echo[:-4], "--timeout", "5")
        assert code == 1 and f"no association with 127.0.0.1:{port}" in err
        assert run(capsys, *echo[:5], "--calling-ae-title", "ECHOX")[0] == 1
        url = f"http://127.0.0.1:{http_port}/health"
        with urllib.request.urlopen(url, timeout=10) as rsp:
            assert b"ok" in rsp.read()
        assert (data / "index.sqlite3").is_file()
        env = {"SPACING_SCP_NODE_PORT": str(port), "SPACING_SCP_NODE_AE_TITLE": "NODEX"}
        with pytest.MonkeyPatch.context() as mp:
            for key, value in env.items():
                mp.setenv(key, value)
            assert run(capsys, "echo", "--calling-ae-title", "ECHOX")[0] == 0
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        log.close()


def test_main_returns_the_exit_code_of_help_and_version(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--version")
    assert code == 0 and out.startswith("spacing-scp ")
    code, out, _ = run(capsys, "series", "--help")
    assert code == 0 and "--study" in out and "show" in out


def test_db_upgrade_creates_the_index_the_readers_then_find(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "new"
    assert run(capsys, "series", "--data-dir", str(data))[0] == 2
    code, out, _ = run(capsys, "--data-dir", str(data), "db", "upgrade")
    assert code == 0 and out == f"database schema: empty -> {head_revision()}\n"
    assert run(capsys, "db", "--data-dir", str(data), "upgrade")[1].startswith(
        f"database schema: {head_revision()} -> {head_revision()}"
    )
    assert run(capsys, "series", "--data-dir", str(data))[:2] == (0, "(none)\n")
