"""Issue 2: receive every image over a real association, store it durably, index it."""

from __future__ import annotations

import sqlite3
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.uid import UID
from sqlalchemy import select

from scp import status
from scp.net.ae import ACCEPTED_TRANSFER_SYNTAXES
from storage.models import Instance, Series
from tests.conftest import corpus_files, dataset_bytes, echo_ok, metric_value, send_files
from tests.dicom_factory import ct_dataset, new_uid, write, write_ct


def stored_path(node: Any, ds_path: Path) -> Path:
    ds = dcmread(ds_path, stop_before_pixels=True, force=True)
    return (
        node.store.instances
        / str(ds.StudyInstanceUID).strip("\0 ")
        / str(ds.SeriesInstanceUID).strip("\0 ")
        / (str(ds.SOPInstanceUID).strip("\0 ") + ".dcm")
    )


def test_echo(node: Any) -> None:
    assert echo_ok(node.port)


def test_store_ct_is_byte_exact_with_file_meta(node: Any, tmp_path: Path) -> None:
    src = write_ct(tmp_path / "ct.dcm")
    [res] = send_files(node.port, [src], ae_title="CT1")
    assert res.status == status.SUCCESS
    out = stored_path(node, src)
    assert dataset_bytes(out) == dataset_bytes(src)
    meta = dcmread(out, stop_before_pixels=True).file_meta
    sent = dcmread(src, stop_before_pixels=True)
    assert meta.TransferSyntaxUID == sent.file_meta.TransferSyntaxUID
    assert meta.MediaStorageSOPInstanceUID == sent.SOPInstanceUID
    assert meta.MediaStorageSOPClassUID == sent.SOPClassUID
    assert meta.SourceApplicationEntityTitle == "CT1"
    assert not list(node.store.tmp.iterdir()), "temporary files left behind"
    with node.sessions() as s:
        inst = s.scalar(select(Instance))
        assert inst is not None
        assert inst.received_pixel_spacing == "0.5\\0.5"
        assert inst.calling_ae_title == "CT1"
        assert inst.size_bytes == out.stat().st_size
        assert inst.status == status.SUCCESS


_TRUNCATION_WARNINGS = ("End of file", "delimiter", "truncated", "bytes remaining")


def _storage_corpus() -> tuple[list[Path], list[Path]]:
    """Corpus files that are storage instances: (valid ones, truncated/malformed ones)."""
    from pynetdicom.sop_class import _STORAGE_CLASSES

    from storage.uids import InvalidUID, check_uid

    storage = set(_STORAGE_CLASSES.values())
    keep: list[Path] = []
    broken: list[Path] = []
    for path in corpus_files():
        try:
            ds = dcmread(path, stop_before_pixels=True)
            meta = ds.file_meta
            ts = meta.TransferSyntaxUID
            if ts not in ACCEPTED_TRANSFER_SYNTAXES:
                continue
            if meta.MediaStorageSOPClassUID not in storage:
                continue
            if meta.MediaStorageSOPInstanceUID != ds.SOPInstanceUID:
                continue
            if meta.MediaStorageSOPClassUID != ds.SOPClassUID:
                continue
            for kw in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
                check_uid(ds.get(kw), kw)
        except (InvalidUID, Exception):
            continue
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                full = dcmread(path)  # the whole file must be readable too
                raw = full.get_item(0x7FE00010)
                if (
                    raw is not None
                    and raw.length != 0xFFFFFFFF
                    and len(raw.value or b"") < (raw.length)
                ):
                    broken.append(path)  # pixel data shorter than its declared length
                    continue
            except Exception:
                broken.append(path)
                continue
        if any(any(w in str(c.message) for w in _TRUNCATION_WARNINGS) for c in caught):
            broken.append(path)
        else:
            keep.append(path)
    return keep, broken


def test_corpus_is_stored_byte_exact(node: Any) -> None:
    files, broken = _storage_corpus()
    assert len(files) >= 60, f"corpus unexpectedly small: {len(files)}"
    # The corpus holds the same SOP instance in several transfer syntaxes: send in rounds
    # of unique SOP Instance UIDs and check each round before a resend replaces it.
    rounds: list[list[Path]] = []
    for path in files:
        uid = str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)
        for rnd in rounds:
            if all(str(dcmread(p, stop_before_pixels=True).SOPInstanceUID) != uid for p in rnd):
                rnd.append(path)
                break
        else:
            rounds.append([path])
    checked = 0
    for rnd in rounds:
        results = send_files(node.port, rnd)
        for res in results:
            assert res.status is not None and status.is_stored(res.status), (
                res.path,
                hex(res.status or 0),
                res.comment,
            )
            out = stored_path(node, res.path)
            sent_ts = dcmread(res.path, stop_before_pixels=True).file_meta.TransferSyntaxUID
            assert dcmread(out, stop_before_pixels=True).file_meta.TransferSyntaxUID == sent_ts
            if res.status == status.SUCCESS:
                assert dataset_bytes(out) == dataset_bytes(res.path), res.path
            else:  # coerced: the received bytes are kept in the originals area
                original = node.store.originals / out.relative_to(node.store.instances)
                assert dataset_bytes(original) == dataset_bytes(res.path), res.path
            checked += 1
    assert checked == len(files)
    # Truncated and malformed corpus files: a failure status, and nothing stored for them.
    assert broken, "the corpus has truncated files (e.g. *_too_short.dcm)"
    for res in send_files(node.port, broken):
        assert res.status == status.ERROR_CANNOT_UNDERSTAND, (res.path, hex(res.status or 0))
    with node.sessions() as s:
        n = len(s.scalars(select(Instance)).all())
    assert n == len({str(dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in files})


def _truncate(src: Path, dst: Path, keep: int) -> Path:
    dst.write_bytes(src.read_bytes()[:keep])
    return dst


def test_truncated_and_garbage_get_failure_and_node_keeps_serving(
    node: Any, tmp_path: Path
) -> None:
    src = write_ct(tmp_path / "ok.dcm", rows=64, columns=64)
    size = src.stat().st_size
    bad = [
        _truncate(src, tmp_path / "cut_pixels.dcm", size - 100),
        _truncate(src, tmp_path / "cut_header.dcm", size - 64 * 64 * 2 - 40),
    ]
    garbage = tmp_path / "garbage.dcm"
    garbage.write_bytes(src.read_bytes()[: size - 64 * 64 * 2 - 200] + b"\xff" * 64)
    bad.append(garbage)
    for path in bad:
        [res] = send_files(node.port, [path])
        assert res.status == status.ERROR_CANNOT_UNDERSTAND, (path.name, hex(res.status or 0))
    [ok] = send_files(node.port, [src])
    assert ok.status == status.SUCCESS
    with node.sessions() as s:
        assert len(s.scalars(select(Instance)).all()) == 1
    assert not list(node.store.tmp.iterdir())


def test_sop_instance_mismatch_answers_a900(node: Any, tmp_path: Path) -> None:
    ds = ct_dataset()
    path = write(ds, tmp_path / "x.dcm")
    # The file meta (what the request announces) names another instance.
    raw = bytearray(path.read_bytes())
    old = str(ds.SOPInstanceUID).encode()
    other = new_uid().encode()[: len(old)].ljust(len(old), b"1")
    idx = raw.index(old)  # first occurrence: (0002,0003) in the file meta
    raw[idx : idx + len(old)] = other
    path.write_bytes(bytes(raw))
    [res] = send_files(node.port, [path])
    assert res.status == status.ERROR_DATASET_DOES_NOT_MATCH_SOP_CLASS
    assert res.comment and "SOPInstanceUID" in res.comment
    with node.sessions() as s:
        assert s.scalar(select(Instance)) is None


@pytest.mark.parametrize("bad_uid", ["1.2.3/../4", "1.2.3 4", "1.2..3", "1." + "2" * 70])
def test_bad_series_uid_refused_never_used_as_path(node: Any, tmp_path: Path, bad_uid: str) -> None:
    ds = ct_dataset()
    ds.SeriesInstanceUID = UID(bad_uid)
    path = write(ds, tmp_path / "bad.dcm")
    [res] = send_files(node.port, [path])
    assert res.status == status.ERROR_CANNOT_UNDERSTAND_UID
    assert not any(p.is_file() for p in node.store.instances.rglob("*"))


def test_free_space_floor_answers_a700(node_factory: Callable[..., Any], tmp_path: Path) -> None:
    node = node_factory(storage={"min_free_mb": 10**9})
    [res] = send_files(node.port, [write_ct(tmp_path / "ct.dcm")])
    assert res.status == status.REFUSED_OUT_OF_RESOURCES
    assert not any(p.is_file() for p in node.store.instances.rglob("*"))


def test_resend_replaces_stored_copy(node: Any, tmp_path: Path, caplog: Any) -> None:
    sop = new_uid()
    study, series = new_uid(), new_uid()
    first = write_ct(tmp_path / "a.dcm", sop=sop, study=study, series=series, rows=8, columns=8)
    second = write_ct(tmp_path / "b.dcm", sop=sop, study=study, series=series, rows=16, columns=16)
    caplog.set_level("INFO", logger="spacing_scp")
    assert send_files(node.port, [first])[0].status == status.SUCCESS
    assert send_files(node.port, [second])[0].status == status.SUCCESS
    out = stored_path(node, second)
    assert dataset_bytes(out) == dataset_bytes(second)
    with node.sessions() as s:
        [inst] = s.scalars(select(Instance)).all()
        assert inst.receive_count == 2
        assert inst.rows == 16
        assert s.scalar(select(Series)).instance_count == 1  # type: ignore[union-attr]
    assert any("resend" in r.getMessage() for r in caplog.records)
    assert not list(out.parent.glob("*.prev"))


def test_index_failure_removes_file_and_answers_failure(node: Any, tmp_path: Path) -> None:
    db = node.cfg.data_dir / "index.sqlite3"
    con = sqlite3.connect(db)
    con.execute(
        "CREATE TRIGGER fail_insert BEFORE INSERT ON instances "
        "BEGIN SELECT RAISE(ABORT, 'disk on fire'); END"
    )
    con.commit()
    con.close()
    src = write_ct(tmp_path / "ct.dcm")
    before = _received(0x0110)
    [res] = send_files(node.port, [src])
    assert res.status == status.PROCESSING_FAILURE
    # A short cause in the Error Comment (LO, 64 characters), and counted by status.
    assert res.comment == "index commit failed: IntegrityError: disk on fire"
    assert _received(0x0110) == before + 1
    assert not stored_path(node, src).exists()
    assert not list(node.store.tmp.iterdir())


def _received(code: int) -> float:
    """``spacing_scp_instances_received_total{status=code}`` as ``/metrics`` serves it."""
    return metric_value("spacing_scp_instances_received_total", status=f"0x{code:04X}")


def test_failed_resend_keeps_the_earlier_copy(node: Any, tmp_path: Path) -> None:
    sop, study, series = new_uid(), new_uid(), new_uid()
    first = write_ct(tmp_path / "a.dcm", sop=sop, study=study, series=series, rows=8, columns=8)
    assert send_files(node.port, [first])[0].status == status.SUCCESS
    con = sqlite3.connect(node.cfg.data_dir / "index.sqlite3")
    con.execute(
        "CREATE TRIGGER fail_update BEFORE UPDATE ON instances "
        "BEGIN SELECT RAISE(ABORT, 'disk on fire'); END"
    )
    con.commit()
    con.close()
    second = write_ct(tmp_path / "b.dcm", sop=sop, study=study, series=series)
    assert send_files(node.port, [second])[0].status == status.PROCESSING_FAILURE
    assert dataset_bytes(stored_path(node, first)) == dataset_bytes(first)


def test_two_associations_same_series_concurrently(node: Any, tmp_path: Path) -> None:
    study, series = new_uid(), new_uid()
    halves = [
        [
            write_ct(
                tmp_path / f"{h}_{i}.dcm",
                study=study,
                series=series,
                position=(0, 0, float(2 * i + h)),
                instance_number=2 * i + h,
            )
            for i in range(15)
        ]
        for h in (0, 1)
    ]
    results: list[list[Any]] = [[], []]

    def run(h: int) -> None:
        results[h] = send_files(node.port, halves[h], ae_title=f"MOD{h}")

    threads = [threading.Thread(target=run, args=(h,)) for h in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert all(r.status == status.SUCCESS for rs in results for r in rs)
    assert sum(len(r) for r in results) == 30
    with node.sessions() as s:
        [ser] = s.scalars(select(Series)).all()
        assert ser.instance_count == 30


def test_index_commits_only_once_the_file_is_in_place(
    node: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The file is written on an I/O thread while the index statements run; a slow disk
    must delay the commit (and the Success), never let it go first."""
    seen: list[int] = []

    def slowed(real_put: Any) -> Any:
        def slow_put(*args: Any, **kwargs: Any) -> Any:
            time.sleep(0.3)  # the index statements are long done by now
            pending = real_put(*args, **kwargs)
            con = sqlite3.connect(node.cfg.data_dir / "index.sqlite3")
            try:
                seen.append(con.execute("SELECT count(*) FROM instances").fetchone()[0])
            finally:
                con.close()
            return pending

        return slow_put

    # written (copied) or received in place (renamed): both placements are slowed
    monkeypatch.setattr(node.store, "put", slowed(node.store.put))
    monkeypatch.setattr(node.store, "put_received", slowed(node.store.put_received))
    src = write_ct(tmp_path / "ct.dcm")
    assert send_files(node.port, [src])[0].status == status.SUCCESS
    assert seen == [0]  # not committed when the file was placed ...
    with node.sessions() as s:  # ... and committed before Success
        assert len(s.scalars(select(Instance)).all()) == 1
    assert dataset_bytes(stored_path(node, src)) == dataset_bytes(src)


def test_file_write_failure_answers_failure_and_indexes_nothing(node: Any, tmp_path: Path) -> None:
    study = new_uid()
    src = write_ct(tmp_path / "ct.dcm", study=study)
    # A plain file where the study's folder belongs: the write cannot place the file.
    (node.store.instances / study).write_bytes(b"not a folder")
    before = _received(0x0110)
    [res] = send_files(node.port, [src])
    assert res.status == status.PROCESSING_FAILURE
    assert res.comment == "internal error: NotADirectoryError: Not a directory"
    assert _received(0x0110) == before + 1
    with node.sessions() as s:
        assert s.scalars(select(Instance)).all() == []
        assert s.scalars(select(Series)).all() == []
    assert not list(node.store.tmp.iterdir())
    # The node keeps serving.
    other = write_ct(tmp_path / "other.dcm")
    assert send_files(node.port, [other])[0].status == status.SUCCESS


def _stored_files(how: str) -> float:
    """``spacing_scp_stored_files_total{how=...}`` as ``/metrics`` serves it."""
    return metric_value("spacing_scp_stored_files_total", how=how)


def test_received_file_is_renamed_into_place_with_the_same_bytes_as_a_written_one(
    node: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 14: the data set is written once, as it arrives, into the store's tmp/ with
    the stored file's File Meta, then renamed into place. The file is the same, byte for
    byte, as the one the node writes when pynetdicom wrote its own File Meta (the seam
    switched off, as on a pynetdicom outside the locked range)."""
    from scp.net import compat_receive
    from scp.net.handlers import received_file_meta
    from scp.services.ingest import IMPLEMENTATION_CLASS_UID

    src = write_ct(tmp_path / "ct.dcm")
    renamed, written = _stored_files("renamed"), _stored_files("written")
    assert send_files(node.port, [src], ae_title="CT1")[0].status == status.SUCCESS
    assert (_stored_files("renamed"), _stored_files("written")) == (renamed + 1, written)
    once = stored_path(node, src).read_bytes()

    monkeypatch.setattr(compat_receive, "_meta_writer", None)
    assert send_files(node.port, [src], ae_title="CT1")[0].status == status.SUCCESS
    assert (_stored_files("renamed"), _stored_files("written")) == (renamed + 1, written + 1)
    assert stored_path(node, src).read_bytes() == once
    meta = dcmread(stored_path(node, src), stop_before_pixels=True).file_meta
    assert meta.SourceApplicationEntityTitle == "CT1"
    assert meta.ImplementationClassUID == IMPLEMENTATION_CLASS_UID  # the node's, not pynetdicom's
    assert not list(node.store.tmp.iterdir()), "temporary files left behind"
    monkeypatch.undo()
    assert compat_receive._meta_writer is received_file_meta
