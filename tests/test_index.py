"""``storage.index.record_instance`` on both backends, without the network: new instances,
resends (in place and into another series), the series geometry and its neighbour look-up,
and concurrent writers of one series."""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from scp.series import SeriesState, SliceGeometry
from scp.services.indexing import InstanceEntry, index_instance, slices_from_json
from storage.db import ensure_schema, make_engine, make_session_factory, write_session
from storage.index import ActionRow, FindingRow
from storage.models import (
    Instance,
    InstanceAction,
    InstanceFinding,
    InstancePosition,
    Series,
    Study,
)
from storage.positions import neighbours
from storage.queries import select_series_page
from tests.dicom_factory import new_uid

T0 = datetime(2026, 1, 1, tzinfo=UTC)
FOR = new_uid()


@pytest.fixture
def sessions(database_url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(database_url)
    ensure_schema(engine)
    yield make_session_factory(engine)
    engine.dispose()


def _slice(sop: str, z: float, frame: int | None = None) -> SliceGeometry:
    return SliceGeometry(
        FOR,
        64,
        64,
        (1, 0, 0, 0, 1, 0),
        (0.0, 0.0, z),
        (0.7, 0.7),
        1.0,
        modality="CT",
        sop_instance_uid=sop,
        frame_number=frame,
    )


def _entry(
    study_uid: str, series_uid: str, sop: str, z: float | None, second: int = 0, **kw: Any
) -> InstanceEntry:
    return InstanceEntry(
        study_instance_uid=study_uid,
        series_instance_uid=series_uid,
        sop_instance_uid=sop,
        sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
        transfer_syntax_uid="1.2.840.10008.1.2.1",
        path=f"{sop}.dcm",
        size_bytes=100 + second,
        calling_ae_title="CT1",
        called_ae_title="SPACING_SCP",
        received_at=T0 + timedelta(seconds=second),
        status=0,
        slices=[] if z is None else [_slice(sop, z)],
        **kw,
    )


def _series(session: Session, uid: str) -> Series:
    series = session.scalar(select(Series).where(Series.series_instance_uid == uid))
    assert series is not None
    return series


def _batch_summary(session: Session, series: Series) -> dict[str, Any]:
    """The series geometry computed in one batch from its instances' stored geometry."""
    rows = session.scalars(select(Instance.geometry).where(Instance.series_id == series.id))
    slices = [g for geometry in rows for g in slices_from_json(geometry)]
    return SeriesState.from_slices(slices).summary(True).to_dict()


def _summary(series: Series) -> dict[str, Any]:
    assert series.geometry_state is not None
    return SeriesState.from_json(series.geometry_state).summary(True).to_dict()


def test_new_instances_then_resends_in_place_and_into_another_series(
    sessions: sessionmaker[Session],
) -> None:
    study, first, second = new_uid(), new_uid(), new_uid()
    sops = [new_uid() for _ in range(5)]
    with write_session(sessions) as session:
        for i, sop in enumerate(sops):
            entry = _entry(
                study,
                first,
                sop,
                i * 1.25,
                i,
                study={"patient_id": "P1" if i == 0 else None},
                series={"modality": "CT", "manufacturer": "ACME" if i < 2 else None},
                instance={"instance_number": str(i + 1), "rows": 64, "verdict": "warning"},
                findings=[FindingRow("F1", "warning", "m", "7")],
                actions=[ActionRow("A1", "r", "PixelSpacing", "0028,0030", "1", "2")],
                original_path=f"o/{sop}" if i % 2 else None,
            )
            indexed, resend = index_instance(session, entry)
            assert not resend and not indexed.resend
    with sessions() as session:
        ser = _series(session, first)
        assert (ser.instance_count, ser.corrected_instances) == (5, 2)
        assert (ser.modality, ser.manufacturer) == ("CT", "ACME")  # unknown values kept
        assert ser.last_received_at.replace(tzinfo=UTC) == T0 + timedelta(seconds=4)
        st = session.scalar(select(Study).where(Study.study_instance_uid == study))
        assert st is not None and st.patient_id == "P1"
        assert session.scalar(select(InstancePosition.id).limit(1)) is not None
        assert _summary(ser) == _batch_summary(session, ser)
        codes = sorted({f["code"] for f in _batch_summary(session, ser)["findings"]})
        assert codes and ser.finding_codes == "," + ",".join(codes) + ","

    # a resend in place: its row replaced, findings and actions anew, counted once more;
    # a header value the entry does not carry stays as it was
    with write_session(sessions) as session:
        entry = _entry(study, first, sops[1], 3.0, 10, instance={"verdict": None})
        indexed, resend = index_instance(session, entry)
        assert resend and indexed.resend
    with sessions() as session:
        ser = _series(session, first)
        assert (ser.instance_count, ser.corrected_instances) == (5, 1)
        inst = session.scalar(select(Instance).where(Instance.sop_instance_uid == sops[1]))
        assert inst is not None and inst.id == indexed.id
        assert (inst.receive_count, inst.verdict, inst.size_bytes) == (2, "ok", 110)
        assert (inst.instance_number, inst.rows, inst.original_path) == ("2", 64, None)
        assert inst.findings == [] and inst.actions == []
        assert len(session.scalars(select(InstanceFinding)).all()) == 4
        assert len(session.scalars(select(InstanceAction)).all()) == 4
        assert _summary(ser) == _batch_summary(session, ser)

    # a resend into another series: counts and geometry move with it
    with write_session(sessions) as session:
        index_instance(session, _entry(study, second, sops[3], 0.0, 11))
    with sessions() as session:
        old, new = _series(session, first), _series(session, second)
        assert (old.instance_count, old.corrected_instances) == (4, 0)
        assert (new.instance_count, new.corrected_instances) == (1, 0)
        inst = session.scalar(select(Instance).where(Instance.sop_instance_uid == sops[3]))
        assert inst is not None and inst.series_id == new.id and inst.receive_count == 2
        assert [g.ipp for g in slices_from_json(inst.geometry)] == [(0.0, 0.0, 0.0)]
        for ser in (old, new):
            assert _summary(ser) == _batch_summary(session, ser)
            positions = session.scalars(
                select(InstancePosition.instance_id).where(InstancePosition.series_id == ser.id)
            ).all()
            instances = session.scalars(select(Instance.id).where(Instance.series_id == ser.id))
            assert sorted(positions) == sorted(instances)


def test_neighbour_look_up_matches_a_scan(sessions: sessionmaker[Session]) -> None:
    study, series = new_uid(), new_uid()
    rng = random.Random(3)
    zs = [rng.randrange(30) * 1.25 for _ in range(60)]  # duplicates included
    with write_session(sessions) as session:
        for i, z in enumerate(zs):
            index_instance(session, _entry(study, series, new_uid(), z, i))
    with sessions() as session:
        ser = _series(session, series)
        rows = session.execute(
            select(InstancePosition.stack_key, InstancePosition.position_um).where(
                InstancePosition.series_id == ser.id
            )
        ).all()
        [key] = {k for k, _ in rows}
        stored = [p for _, p in rows]
        conn = session.connection()
        for p in [*sorted(set(stored)), -1, 1000, 625_000, 10**9]:
            below = sorted({q for q in stored if q < p}, reverse=True)[:2]
            above = sorted({q for q in stored if q > p})[:2]
            assert neighbours(conn, ser.id, key, p) == (below, above, stored.count(p))
        assert _summary(ser) == _batch_summary(session, ser)


def test_concurrent_writers_of_one_new_series(database_url: str) -> None:
    """Threads of two "nodes" (engines) create and fill one study and series at once:
    nothing is lost, counted twice or left out of the series geometry."""
    engines = [make_engine(database_url), make_engine(database_url)]
    ensure_schema(engines[0])
    factories = [make_session_factory(e) for e in engines]
    study, series = new_uid(), new_uid()
    errors: list[BaseException] = []

    def writer(n: int, factory: sessionmaker[Session], zs: Sequence[float]) -> None:
        try:
            for i, z in enumerate(zs):
                with write_session(factory) as session:
                    index_instance(session, _entry(study, series, new_uid(), z, n * 100 + i))
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [
        threading.Thread(
            target=writer, args=(n, factories[n % 2], [(n + 4 * i) * 1.25 for i in range(15)])
        )
        for n in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors
    try:
        with factories[0]() as session:
            ser = _series(session, series)
            assert ser.instance_count == 60
            assert len(session.scalars(select(Study)).all()) == 1
            assert len(session.scalars(select(InstancePosition)).all()) == 60
            assert _summary(ser) == _batch_summary(session, ser)
            assert _summary(ser)["slice_spacing"]["mm"] == 1.25
    finally:
        for e in engines:
            e.dispose()


@pytest.mark.parametrize("wildcard", ["SLICE_MISSIN_", "SLICE%", "%", "_"])
def test_series_code_filter_matches_the_code_literally(
    sessions: sessionmaker[Session], wildcard: str
) -> None:
    """The code filter (HTTP ``GET /series?code=``) escapes LIKE: ``_`` and ``%`` in a code
    are themselves, not wildcards (as C-FIND escapes them, PS3.4 C.2.2.2.4)."""
    series_uid = new_uid()
    with write_session(sessions) as session:
        index_instance(session, _entry(new_uid(), series_uid, new_uid(), 0.0))
        _series(session, series_uid).finding_codes = ",SLICE_MISSING,"
    with sessions() as session:
        found, _ = select_series_page(session, code="SLICE_MISSING")
        assert [s.series_instance_uid for s, _ in found] == [series_uid]
        assert select_series_page(session, code=wildcard)[0] == []
