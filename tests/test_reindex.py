"""Issue 6: ``spacing-scp reindex`` rebuilds the index from the file store.

Instances are received over a real association (some corrected by the node: swap
rule, over-long DS, comma decimal, nested Pixel Measures), the database is deleted,
``reindex`` runs, and the series summaries and instance records are the same.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence

from scp import status
from scp.config import Config, load_config
from scp.node import Node
from scp.services.reindex import (
    RECORDED_MODIFICATION,
    REINDEX_POLICY_CHANGED,
    check_stored_file,
    file_meta_problems,
    reindex,
)
from scp.services.series_query import IndexQueries
from storage.db import make_engine, make_session_factory
from storage.filestore import FileStore
from storage.part10 import read_received
from tests.conftest import send_files
from tests.dicom_factory import ct_dataset, new_uid, set_raw, write

SWAP_RULE = """
[[swap_rules]]
name = "ACME CR writes column spacing first"
attributes = ["PixelSpacing"]
comma_decimal = true
[swap_rules.match]
Manufacturer = "ACME CR*"
"""

#: Instance fields that are not in the stored files (see scp/services/reindex.py).
_NOT_IN_FILES = {"received_at", "receive_count", "last_received_at", "state"}


def _config(tmp_path: Path, data: Path, rules: str = SWAP_RULE) -> Config:
    path = tmp_path / f"cfg{abs(hash(rules)) % 1000}.toml"
    path.write_text(
        f'[node]\nhost = "127.0.0.1"\nport = 0\n[http]\nenabled = false\n'
        f'[storage]\ndata_dir = "{data}"\nmin_free_mb = 0\n' + rules
    )
    return load_config(path, environ={})


def _enhanced_pixel_measures(ds: Dataset) -> None:
    measures = Dataset()
    measures.PixelSpacing = ["0.7", "0.8"]
    shared = Dataset()
    shared.PixelMeasuresSequence = DicomSequence([measures])
    ds.SharedFunctionalGroupsSequence = DicomSequence([shared])


def _received_series(tmp_path: Path) -> list[Path]:
    """Five series: plain CT, swapped CR, over-long DS, comma decimals, nested measures."""
    files: list[Path] = []
    plain = (new_uid(), new_uid())
    for i in range(4):
        files.append(
            write(
                ct_dataset(
                    study=plain[0], series=plain[1], position=(0, 0, 2.0 * i), instance_number=i
                ),
                tmp_path / f"plain{i}.dcm",
            )
        )
    swapped = (new_uid(), new_uid())
    for i in range(3):
        ds = ct_dataset(
            study=swapped[0],
            series=swapped[1],
            pixel_spacing="0.5\\0.6",
            position=(0, 0, 1.0 * i),
            instance_number=i,
        )
        ds.Manufacturer = "ACME CR-9"
        files.append(write(ds, tmp_path / f"swap{i}.dcm"))
    long_ds = ct_dataset()
    set_raw(long_ds, 0x00280030, "DS", b"0.48828125000000001\\0.48828125000000001")  # rule 2
    files.append(write(long_ds, tmp_path / "long.dcm"))
    comma = ct_dataset()
    comma.Manufacturer = "ACME CR-1"
    set_raw(comma, 0x00280030, "DS", b"0,5\\0,6")  # nonconforming: kept in (0400,0551)
    files.append(write(comma, tmp_path / "comma.dcm"))
    nested = ct_dataset(extra=_enhanced_pixel_measures)
    nested.Manufacturer = "ACME CR-2"
    files.append(write(nested, tmp_path / "nested.dcm"))
    return files


def _snapshot(cfg: Config) -> dict[str, Any]:
    engine = make_engine(cfg.database_url)
    sessions = make_session_factory(engine)
    queries = IndexQueries(cfg.series.quiet_seconds, cfg.tolerance)
    out: dict[str, Any] = {}
    try:
        with sessions() as s:
            items, _ = queries.list_series(s, limit=500)
            for summary in items:
                uid = summary["series_instance_uid"]
                full = queries.get_series(s, uid)
                instances, _ = queries.list_instances(s, uid, limit=500)
                out[uid] = {
                    "summary": _strip(full),
                    "instances": sorted(
                        (_strip(i) for i in instances), key=lambda i: i["sop_instance_uid"]
                    ),
                }
    finally:
        engine.dispose()
    return out


def _strip(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k not in _NOT_IN_FILES}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def _delete_index(cfg: Config) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(str(cfg.data_dir / "index.sqlite3") + suffix).unlink(missing_ok=True)


def _receive(cfg: Config, files: list[Path]) -> list[int | None]:
    node = Node(cfg)
    node.start()
    try:
        return [r.status for r in send_files(node.port, files, ae_title="MODALITY1")]
    finally:
        node.stop(grace_s=2)


def test_reindex_rebuilds_the_same_index(tmp_path: Path) -> None:
    cfg = _config(tmp_path, tmp_path / "data")
    files = _received_series(tmp_path)
    statuses = _receive(cfg, files)
    assert all(s is not None and status.is_stored(s) for s in statuses), statuses
    assert status.WARNING_COERCION_OF_DATA_ELEMENTS in statuses  # the node corrected some
    before = _snapshot(cfg)
    stored_bytes = {p: p.read_bytes() for p in cfg.data_dir.joinpath("instances").rglob("*.dcm")}
    corrected = sum(s["summary"]["corrected_instances"] for s in before.values())
    assert corrected >= 5, before

    _delete_index(cfg)
    # The command line, as an operator runs it.
    out = subprocess.run(
        [sys.executable, "-m", "scp", "reindex", "--config", str(cfg.source)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"{len(files)} indexed" in out.stdout
    after = _snapshot(cfg)
    assert after == before
    # Reindexing never changes a stored file.
    for path, data in stored_bytes.items():
        assert path.read_bytes() == data

    # Idempotent: a complete index is left as it is.
    again = reindex(cfg)
    assert (again.indexed, again.already_indexed, again.skipped) == (0, len(files), [])
    assert _snapshot(cfg) == before


def test_changed_policy_the_stored_file_wins(tmp_path: Path) -> None:
    data = tmp_path / "data"
    cfg = _config(tmp_path, data)
    ds = ct_dataset(pixel_spacing="0.5\\0.6")
    ds.Manufacturer = "ACME CR-9"
    src = write(ds, tmp_path / "cr.dcm")
    assert _receive(cfg, [src]) == [status.WARNING_COERCION_OF_DATA_ELEMENTS]
    _delete_index(cfg)
    # The swap rule was removed since: the stored file is swapped all the same.
    report = reindex(_config(tmp_path, data, rules=""))
    assert (report.indexed, report.policy_changed) == (1, 1)
    [series] = _snapshot(cfg).values()
    [inst] = series["instances"]
    assert series["summary"]["corrected_instances"] == 1
    assert inst["received_pixel_spacing"] == "0.6\\0.5"  # as stored: the record wins
    assert (inst["pixel_spacing"]["row_mm"], inst["pixel_spacing"]["column_mm"]) == (0.6, 0.5)
    codes = {f["code"] for f in inst["findings"]}
    assert REINDEX_POLICY_CHANGED in codes
    [action] = inst["actions"]
    assert (action["code"], action["attribute"]) == (RECORDED_MODIFICATION, "PixelSpacing")
    assert (action["old"], action["new"]) == ("0.5\\0.6", "0.6\\0.5")


def test_same_swap_rule_is_never_applied_twice(tmp_path: Path) -> None:
    """The stored file is the corrected one: reindexing it must not swap it back."""
    cfg = _config(tmp_path, tmp_path / "data")
    ds = ct_dataset(pixel_spacing="0.5\\0.6")
    ds.Manufacturer = "ACME CR-9"
    assert _receive(cfg, [write(ds, tmp_path / "cr.dcm")]) == [
        status.WARNING_COERCION_OF_DATA_ELEMENTS
    ]
    _delete_index(cfg)
    assert reindex(cfg).indexed == 1
    [series] = _snapshot(cfg).values()
    [inst] = series["instances"]
    assert inst["received_pixel_spacing"] == "0.5\\0.6"
    assert (inst["pixel_spacing"]["row_mm"], inst["pixel_spacing"]["column_mm"]) == (0.6, 0.5)
    assert [(a["old"], a["new"]) for a in inst["actions"]] == [("0.5\\0.6", "0.6\\0.5")]


def _place(store: FileStore, ds: Dataset, tmp: Path, name: str) -> Path:
    src = write(ds, tmp / name)
    rel = store.relpath(str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID))
    dst = store.path(rel)
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(src.read_bytes())
    return dst


def test_reindex_skips_invalid_files_cleanly(tmp_path: Path) -> None:
    cfg = _config(tmp_path, tmp_path / "data")
    store = FileStore(cfg.data_dir)
    good = _place(store, ct_dataset(), tmp_path, "good.dcm")
    # File Meta naming another instance than the data set (never written by the node).
    meta_ds = ct_dataset()
    bad_meta = _place(store, meta_ds, tmp_path, "meta.dcm")
    raw = bytearray(bad_meta.read_bytes())
    uid = str(meta_ds.SOPInstanceUID).encode()
    at = raw.index(uid)
    last = at + len(uid) - 1  # first occurrence: (0002,0003) in the File Meta
    raw[last] = ord("8") if raw[last] == ord("9") else ord("9")
    bad_meta.write_bytes(bytes(raw))
    truncated = _place(store, ct_dataset(), tmp_path, "cut.dcm")
    truncated.write_bytes(truncated.read_bytes()[:-100])
    misplaced_ds = ct_dataset()
    misplaced = _place(store, misplaced_ds, tmp_path, "misplaced.dcm")
    elsewhere = misplaced.parent / ("1.2.3" + ".dcm")
    misplaced.rename(elsewhere)
    not_dicom = store.instances / "1.2" / "3.4" / "5.6.dcm"
    not_dicom.parent.mkdir(parents=True)
    not_dicom.write_bytes(b"\x00" * 64)
    before = {p: p.read_bytes() for p in store.instances.rglob("*.dcm")}

    report = reindex(cfg)
    assert report.indexed == 1
    reasons = {p.name: why for p, why in report.skipped}
    assert set(reasons) == {bad_meta.name, truncated.name, elsewhere.name, not_dicom.name}
    assert "invalid File Meta Information" in reasons[bad_meta.name]
    assert "MediaStorageSOPInstanceUID" in reasons[bad_meta.name]
    assert "malformed" in reasons[truncated.name]
    assert "not where its UIDs place it" in reasons[elsewhere.name]
    assert "malformed" in reasons[not_dicom.name]
    # Nothing changed or removed.
    assert {p: p.read_bytes() for p in store.instances.rglob("*.dcm")} == before
    assert check_stored_file(store, good).header.SOPInstanceUID
    out = subprocess.run(
        [sys.executable, "-m", "scp", "reindex", "--config", str(cfg.source)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 1 and "4 skipped" in out.stdout, out.stdout + out.stderr


def test_file_meta_problems_names_each_field(tmp_path: Path) -> None:
    ds = ct_dataset()
    path = write(ds, tmp_path / "x.dcm")
    received = read_received(path)
    assert file_meta_problems(received) == []
    meta = received.file_meta
    meta.FileMetaInformationVersion = b"\x00\x02"
    meta.TransferSyntaxUID = "1.2.bad uid"
    del meta.ImplementationClassUID
    meta.MediaStorageSOPClassUID = "1.2.3"
    problems = " | ".join(file_meta_problems(received))
    for needle in (
        "(0002,0001)",
        "TransferSyntaxUID",
        "ImplementationClassUID",
        "MediaStorageSOPClassUID",
    ):
        assert needle in problems, problems


def test_node_writes_valid_file_meta(tmp_path: Path) -> None:
    """Every file the node stores passes the reindex checks (PS3.10 7.1)."""
    cfg = _config(tmp_path, tmp_path / "data")
    files = _received_series(tmp_path)
    _receive(cfg, files)
    store = FileStore(cfg.data_dir)
    stored = list(store.instances.rglob("*.dcm")) + list(store.originals.rglob("*.dcm"))
    assert len(stored) >= len(files)
    for path in stored:
        received = read_received(path)
        assert file_meta_problems(received) == [], path
        meta = dcmread(path, stop_before_pixels=True).file_meta
        assert meta.SourceApplicationEntityTitle == "MODALITY1"


def test_reindex_fills_patient_names_indexed_before_revision_0004(tmp_path: Path) -> None:
    # Studies indexed before the index held Patient's Name (issue 17): reindex reads it
    # from a stored file; a newly indexed file gets it from the ingest mapping.
    from sqlalchemy import select, update

    from storage.models import Study

    cfg = _config(tmp_path, tmp_path / "data")
    files = _received_series(tmp_path)
    _receive(cfg, files)
    engine = make_engine(cfg.database_url)
    try:
        sessions = make_session_factory(engine)
        with sessions() as session:
            names = set(session.scalars(select(Study.patient_name)))
            assert names == {"Test^Spacing"}
            session.execute(update(Study).values(patient_name=None))
            session.commit()
        again = reindex(cfg)
        assert again.indexed == 0
        with sessions() as session:
            assert set(session.scalars(select(Study.patient_name))) == {"Test^Spacing"}
    finally:
        engine.dispose()
