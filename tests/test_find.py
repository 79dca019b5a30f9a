"""Issue 4 item 4: the C-FIND SCP (Study Root, PS3.4 C.4.1, C.6.2) over the index.

Studies are stored through the real node (``send_files``), then queried over real
associations: pynetdicom's ``send_c_find`` and dcmtk's ``findscu``.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import MRImageStorage
from pynetdicom import AE
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StudyRootQueryRetrieveInformationModelFind,
)
from sqlalchemy import select
from sqlalchemy.orm import InstrumentedAttribute

from scp import status
from scp.pipeline.policy import SwapRule
from scp.services.find import KEYS, FindService, parse_identifier
from scp.services.find.sql import index_column
from storage.models import Instance
from tests.conftest import REQUIRE_POSTGRES, dcmtk_env, dcmtk_tool, make_config, send_files
from tests.dicom_factory import new_uid, write_ct

PENDING = (status.FIND_PENDING, status.FIND_PENDING_WARNING_OPTIONAL_KEYS)


# ------------------------------------------------------------------------------ the archive


@dataclass
class Archive:
    """A running node holding four studies (see :func:`archive`)."""

    node: Any
    study: dict[str, str] = field(default_factory=dict)
    series: dict[str, str] = field(default_factory=dict)
    sops: dict[str, list[str]] = field(default_factory=dict)


def _setter(**values: Any) -> Callable[[Dataset], None]:
    def extra(ds: Dataset) -> None:
        for keyword, value in values.items():
            if value is None:
                if keyword in ds:
                    delattr(ds, keyword)
            else:
                setattr(ds, keyword, value)

    return extra


def _write_series(
    folder: Path,
    archive: Archive,
    name: str,
    study_key: str,
    count: int,
    gap_mm: float,
    *,
    pixel_spacing: str = "0.5\\0.5",
    modality: str = "CT",
    sop_class: str = "1.2.840.10008.5.1.4.1.1.2",
    study_values: dict[str, Any],
    series_values: dict[str, Any],
) -> list[Path]:
    series_uid = archive.series[name] = new_uid()
    files = []
    sops = archive.sops.setdefault(name, [])
    for i in range(count):
        sop = new_uid()
        sops.append(sop)
        files.append(
            write_ct(
                folder / name / f"{i:03d}.dcm",
                study=archive.study[study_key],
                series=series_uid,
                sop=sop,
                position=(0.0, 0.0, i * gap_mm),
                instance_number=i + 1,
                pixel_spacing=pixel_spacing,
                modality=modality,
                sop_class=sop_class,
                extra=_setter(**study_values, **series_values),
            )
        )
    return files


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest) -> Iterator[dict[str, str]]:
    """Each archive on both index backends: wild cards are GLOB on SQLite, LIKE elsewhere.

    PostgreSQL needs ``SPACING_SCP_TEST_POSTGRES_URL`` (``.ci/postgres.sh``), as in
    ``tests.conftest.postgres_url`` (function-scoped, hence this module-scoped twin).
    """
    if request.param == "sqlite":
        yield {}
        return
    base = os.environ.get("SPACING_SCP_TEST_POSTGRES_URL")
    if not base:
        if REQUIRE_POSTGRES:
            pytest.fail("SPACING_SCP_TEST_POSTGRES_URL is required (run .ci/postgres.sh)")
        pytest.skip('no PostgreSQL server: eval "$(bash .ci/postgres.sh)" to test on one')
    import psycopg

    name = f"spacing_find_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield {"database_url": base.rsplit("/", 1)[0] + "/" + name}
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def archive(
    tmp_path_factory: pytest.TempPathFactory, database: dict[str, str]
) -> Iterator[Archive]:
    """Study A: CT (10 slices 1.25 mm apart) + MR (one slice); study B: CT from a device a
    swap rule names (Pixel Spacing stored swapped); study C: no date, no accession,
    non-ASCII description; study D: a Patient ID that differs from C's in one character."""
    from scp.node import Node

    root = tmp_path_factory.mktemp("find")
    cfg = make_config(root / "data", storage=database)
    cfg.swap_rules = [SwapRule(name="SWAPCO writes column first", match={"Manufacturer": "SWAPCO"})]
    node = Node(cfg)
    node.start()
    arc = Archive(node=node, study={k: new_uid() for k in "ABCD"})
    a = {
        "PatientID": "PAT-A",
        "PatientName": "Doe^John",
        "AccessionNumber": "ACC-1",
        "StudyDate": "20260115",
        "StudyTime": "101500",
        "StudyDescription": "CT Chest",
    }
    b = {
        "PatientID": "PAT-B",
        "PatientName": "DOE^JANE",
        "AccessionNumber": "acc-2",
        "StudyDate": "20251231",
        "StudyTime": "235959",
        "StudyDescription": "Head",
    }
    c = {
        "SpecificCharacterSet": "ISO_IR 192",
        "PatientID": "P_1%x",
        "PatientName": "Yamada^Tarou=山田^太郎=やまだ^たろう",
        "AccessionNumber": None,
        "StudyDate": None,
        "StudyDescription": "Schädel",
    }
    d = {
        "PatientID": "PA1%x",
        "PatientName": None,
        "StudyDate": "20240101",
        "AccessionNumber": "D-1",
        "StudyDescription": "Knee",
    }
    files = [
        *_write_series(
            root,
            arc,
            "A1",
            "A",
            10,
            1.25,
            study_values=a,
            series_values={"SeriesNumber": 1, "SeriesDescription": "Axial 1.25"},
        ),
        *_write_series(
            root,
            arc,
            "A2",
            "A",
            1,
            0.0,
            pixel_spacing="0.9\\0.9",
            modality="MR",
            sop_class=MRImageStorage,
            study_values=a,
            series_values={"SeriesNumber": 2, "SeriesDescription": "Localizer"},
        ),
        *_write_series(
            root,
            arc,
            "B1",
            "B",
            3,
            2.5,
            pixel_spacing="0.4\\0.6",
            study_values=b,
            series_values={"SeriesNumber": 3, "Manufacturer": "SWAPCO"},
        ),
        *_write_series(root, arc, "C1", "C", 1, 0.0, study_values=c, series_values={}),
        *_write_series(root, arc, "D1", "D", 1, 0.0, study_values=d, series_values={}),
    ]
    results = send_files(node.port, files)
    assert all(r.status is not None and status.is_stored(r.status) for r in results), results
    yield arc
    node.stop(grace_s=2)


# ------------------------------------------------------------------------------ helpers


@dataclass
class FindResult:
    statuses: list[int]
    identifiers: list[Dataset]
    final: Dataset

    def values(self, keyword: str) -> list[Any]:
        return [ds.get(keyword) for ds in self.identifiers]


def identifier(level: str, **keys: Any) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    return ds


def c_find(port: int, query: Dataset) -> FindResult:
    ae = AE(ae_title="FINDSCU")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    assoc = ae.associate("127.0.0.1", port, ae_title="SPACING_SCP")
    assert assoc.is_established
    try:
        responses = list(assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind))
    finally:
        assoc.release()
    statuses = [int(st.Status) for st, _ in responses]
    assert statuses and all(s in PENDING for s in statuses[:-1]), [hex(s) for s in statuses]
    return FindResult(
        statuses=statuses,
        identifiers=[ds for st, ds in responses if int(st.Status) in PENDING],
        final=responses[-1][0],
    )


def direct(archive: Archive, query: Dataset, **options: Any) -> list[tuple[int, Any]]:
    """The SCP's answer without the network (for options the archive node does not use)."""
    service = FindService(archive.node.sessions, archive.node.queries, **options)
    return [(int(getattr(st, "Status", st)), ds) for st, ds in service.find(query)]


def studies(archive: Archive, result: FindResult) -> set[str]:
    names = {uid: name for name, uid in archive.study.items()}
    return {names[str(uid)] for uid in result.values("StudyInstanceUID")}


def study_query(archive: Archive, **keys: Any) -> set[str]:
    keys.setdefault("StudyInstanceUID", "")
    result = c_find(archive.node.port, identifier("STUDY", **keys))
    assert result.final.Status == status.SUCCESS
    return studies(archive, result)


# ------------------------------------------------------------------------------ STUDY level


def test_study_level_returns_only_the_requested_keys(archive: Archive) -> None:
    result = c_find(
        archive.node.port,
        identifier(
            "STUDY",
            PatientID="PAT-A",
            StudyInstanceUID="",
            StudyDate="",
            ModalitiesInStudy="",
            NumberOfStudyRelatedSeries="",
            NumberOfStudyRelatedInstances="",
        ),
    )
    assert result.final.Status == status.SUCCESS
    assert result.statuses[:-1] == [status.FIND_PENDING]
    (ds,) = result.identifiers
    assert {e.keyword for e in ds} == {
        "QueryRetrieveLevel",
        "PatientID",
        "StudyInstanceUID",
        "StudyDate",
        "ModalitiesInStudy",
        "NumberOfStudyRelatedSeries",
        "NumberOfStudyRelatedInstances",
    }
    assert ds.QueryRetrieveLevel == "STUDY"
    assert ds.StudyInstanceUID == archive.study["A"]
    assert ds.StudyDate == "20260115"
    assert list(ds.ModalitiesInStudy) == ["CT", "MR"]
    assert ds.NumberOfStudyRelatedSeries == 2
    assert ds.NumberOfStudyRelatedInstances == 11


def test_wild_card_matching_is_case_sensitive_and_literal(archive: Archive) -> None:
    assert study_query(archive, PatientID="PAT-*") == {"A", "B"}
    assert study_query(archive, PatientID="PAT-?") == {"A", "B"}
    assert study_query(archive, PatientID="pat-*") == set()  # C.2.2.2.4: case-sensitive
    assert study_query(archive, PatientID="*") == set("ABCD")  # "*" is universal
    # "_" and "%" are not wild cards in DICOM: only C's Patient ID starts with "P_1"
    assert study_query(archive, PatientID="P_1*") == {"C"}
    assert study_query(archive, PatientID="P?1%x") == {"C", "D"}
    assert study_query(archive, StudyDescription="Sch?del") == {"C"}  # "?" is one character


def test_unknown_values_match_any_key_value(archive: Archive) -> None:
    # PS3.4 C.2.2.1.2: C has no Accession Number and no Study Date (unknown)
    assert study_query(archive, AccessionNumber="ACC*") == {"A", "C"}
    assert study_query(archive, StudyDate="20251231") == {"B", "C"}
    strict = direct(
        archive,
        identifier("STUDY", StudyInstanceUID="", AccessionNumber="ACC*"),
        match_unknown=False,
    )
    assert [ds.StudyInstanceUID for st, ds in strict] == [archive.study["A"]]


def test_date_and_time_ranges(archive: Archive) -> None:
    assert study_query(archive, StudyDate="20260101-20261231") == {"A", "C"}
    assert study_query(archive, StudyDate="-20251231") == {"B", "C", "D"}
    assert study_query(archive, StudyDate="20251231-") == {"A", "B", "C"}
    assert study_query(archive, StudyDate="20240101\\20260115") == {"A", "C", "D"}

    def times(value: str) -> set[str]:
        query = identifier("STUDY", StudyInstanceUID="", StudyTime=value)
        names = {uid: name for name, uid in archive.study.items()}
        return {
            names[ds.StudyInstanceUID]
            for st, ds in direct(archive, query, match_unknown=False)
            if ds is not None
        }

    assert times("1000-1100") == {"A"}
    assert times("-10") == {"A"}  # a partial upper bound takes in 10:xx:xx
    assert times("-0959") == set()
    assert times("2359-") == {"B"}
    assert times("101500") == {"A"}


def test_uid_list_matching(archive: Archive) -> None:
    both = f"{archive.study['A']}\\{archive.study['B']}"
    assert study_query(archive, StudyInstanceUID=both) == {"A", "B"}
    assert study_query(archive, StudyInstanceUID=archive.study["D"]) == {"D"}
    assert study_query(archive, StudyInstanceUID="1.2.3.4.5.404") == set()


def test_modalities_in_study_matches_any_series(archive: Archive) -> None:
    assert study_query(archive, ModalitiesInStudy="MR") == {"A"}
    assert study_query(archive, ModalitiesInStudy="CT\\MR") == set("ABCD")
    assert study_query(archive, ModalitiesInStudy="M?") == {"A"}


def test_specific_character_set_for_non_ascii_values(archive: Archive) -> None:
    result = c_find(
        archive.node.port,
        identifier("STUDY", StudyInstanceUID=archive.study["C"], StudyDescription=""),
    )
    (ds,) = result.identifiers
    assert ds.SpecificCharacterSet == "ISO_IR 192"
    assert ds.StudyDescription == "Schädel"
    query = identifier("STUDY", StudyInstanceUID="", StudyDescription="Schädel")
    query.SpecificCharacterSet = "ISO_IR 192"
    result = c_find(archive.node.port, query)
    assert studies(archive, result) == {"C"}
    # asked for, all values ASCII: the request's character set comes back
    query = identifier("STUDY", StudyInstanceUID=archive.study["A"])
    query.SpecificCharacterSet = "ISO_IR 100"
    (ds,) = c_find(archive.node.port, query).identifiers
    assert ds.SpecificCharacterSet == "ISO_IR 100"


def test_unsupported_keys_are_left_out_with_pending_warning(archive: Archive) -> None:
    result = c_find(
        archive.node.port,
        identifier(
            "STUDY",
            StudyInstanceUID=archive.study["A"],
            PatientBirthDate="",  # not in the index
            NumberOfStudyRelatedSeries="7",  # return key: the value is not matched
        ),
    )
    assert result.statuses == [status.FIND_PENDING_WARNING_OPTIONAL_KEYS, status.SUCCESS]
    (ds,) = result.identifiers
    assert "PatientBirthDate" not in ds
    assert ds.NumberOfStudyRelatedSeries == 2


# ------------------------------------------------------------------------------ SERIES level


def test_series_level_spacing_between_slices_is_measured(archive: Archive) -> None:
    result = c_find(
        archive.node.port,
        identifier(
            "SERIES",
            StudyInstanceUID=archive.study["A"],
            SeriesInstanceUID="",
            Modality="",
            SeriesNumber="",
            SeriesDescription="",
            NumberOfSeriesRelatedInstances="",
            SpacingBetweenSlices="",
            PixelSpacing="",
            SliceThickness="",
            PatientID="",  # a study key the index holds: returned at SERIES level too
        ),
    )
    assert result.final.Status == status.SUCCESS
    by_uid = {ds.SeriesInstanceUID: ds for ds in result.identifiers}
    assert set(by_uid) == {archive.series["A1"], archive.series["A2"]}
    ct = by_uid[archive.series["A1"]]
    assert ct.Modality == "CT" and ct.SeriesNumber == 1 and ct.SeriesDescription == "Axial 1.25"
    assert ct.NumberOfSeriesRelatedInstances == 10
    assert ct["SpacingBetweenSlices"].VR == "DS" and str(ct.SpacingBetweenSlices) == "1.25"
    assert [str(v) for v in ct.PixelSpacing] == ["0.5", "0.5"]
    assert str(ct.SliceThickness) == "1.0"
    assert ct.PatientID == "PAT-A" and ct.StudyInstanceUID == archive.study["A"]
    mr = by_uid[archive.series["A2"]]
    # one slice: Z is undefined (rulebook rule 29), zero length, never 1.0
    assert "SpacingBetweenSlices" in mr and mr.SpacingBetweenSlices in (None, "")
    assert [str(v) for v in mr.PixelSpacing] == ["0.9", "0.9"]


def test_series_level_matching(archive: Archive) -> None:
    def series_of(**keys: Any) -> set[str]:
        query = identifier("SERIES", SeriesInstanceUID="", **keys)
        result = c_find(archive.node.port, query)
        names = {uid: name for name, uid in archive.series.items()}
        return {names[ds.SeriesInstanceUID] for ds in result.identifiers}

    a = archive.study["A"]
    assert series_of(StudyInstanceUID=a, Modality="MR") == {"A2"}
    assert series_of(StudyInstanceUID=a, SeriesNumber="2") == {"A2"}
    assert series_of(StudyInstanceUID=a, SeriesDescription="Axial*") == {"A1"}
    both = f"{a}\\{archive.study['B']}"
    assert series_of(StudyInstanceUID=both, Modality="CT") == {"A1", "B1"}


def test_swapped_series_pixel_spacing_is_the_stored_consensus(archive: Archive) -> None:
    result = c_find(
        archive.node.port,
        identifier(
            "SERIES",
            StudyInstanceUID=archive.study["B"],
            SeriesInstanceUID="",
            PixelSpacing="",
            SpacingBetweenSlices="",
        ),
    )
    (ds,) = result.identifiers
    assert [str(v) for v in ds.PixelSpacing] == ["0.6", "0.4"]
    assert str(ds.SpacingBetweenSlices) == "2.5"


@pytest.mark.parametrize(
    "keys",
    [
        {},  # SERIES without StudyInstanceUID (PS3.4 C.4.1.3.1)
        {"StudyInstanceUID": ""},
        {"StudyInstanceUID": "1.2.*"},
    ],
)
def test_series_level_needs_the_study_uid_without_relational_queries(
    archive: Archive, keys: dict[str, str]
) -> None:
    # [query] relational = false: baseline hierarchical search (PS3.4 C.4.1.3.1)
    query = identifier("SERIES", SeriesInstanceUID="", **keys)
    answers = direct(archive, query, relational=False)
    assert [st for st, _ in answers] == [status.FIND_ERROR_IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS]


# ------------------------------------------------------------------------------ IMAGE level


def test_image_level_pixel_spacing_as_stored(archive: Archive) -> None:
    result = c_find(
        archive.node.port,
        identifier(
            "IMAGE",
            StudyInstanceUID=archive.study["B"],
            SeriesInstanceUID=archive.series["B1"],
            SOPInstanceUID="",
            SOPClassUID="",
            InstanceNumber="",
            Rows=None,
            Columns=None,
            NumberOfFrames="",
            PixelSpacing="",
        ),
    )
    assert result.final.Status == status.SUCCESS
    assert sorted(result.values("SOPInstanceUID")) == sorted(archive.sops["B1"])
    for ds in result.identifiers:
        # received 0.4\0.6; the swap rule corrected the stored file to 0.6\0.4
        assert [str(v) for v in ds.PixelSpacing] == ["0.6", "0.4"]
        assert ds.Rows == 16 and ds.Columns == 16
        assert ds.NumberOfFrames in (None, "")
        assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.2"
    with archive.node.sessions() as s:
        received = s.scalars(
            select(Instance.received_pixel_spacing).where(
                Instance.sop_instance_uid.in_(archive.sops["B1"])
            )
        ).all()
    assert set(received) == {"0.4\\0.6"}
    with archive.node.sessions() as s:
        relpath = s.scalar(
            select(Instance.path).where(Instance.sop_instance_uid == archive.sops["B1"][0])
        )
    assert relpath is not None
    stored = dcmread(archive.node.store.path(relpath), stop_before_pixels=True)
    assert [str(v) for v in stored.PixelSpacing] == ["0.6", "0.4"]


def test_image_level_matching(archive: Archive) -> None:
    base = {"StudyInstanceUID": archive.study["A"], "SeriesInstanceUID": archive.series["A1"]}
    sops = archive.sops["A1"]
    result = c_find(
        archive.node.port,
        identifier("IMAGE", **base, SOPInstanceUID=f"{sops[0]}\\{sops[4]}", PixelSpacing=""),
    )
    assert sorted(result.values("SOPInstanceUID")) == sorted([sops[0], sops[4]])
    assert all([str(v) for v in ds.PixelSpacing] == ["0.5", "0.5"] for ds in result.identifiers)
    result = c_find(
        archive.node.port, identifier("IMAGE", **base, SOPInstanceUID="", InstanceNumber="3")
    )
    assert result.values("SOPInstanceUID") == [sops[2]]
    query = identifier("IMAGE", StudyInstanceUID=archive.study["A"], SOPInstanceUID="")
    result = c_find(archive.node.port, query)  # relational (PS3.4 C.4.1.2.2): 11 images
    assert len(result.identifiers) == 11 and result.final.Status == status.SUCCESS
    baseline = direct(archive, query, relational=False)  # needs the Series Instance UID
    assert [st for st, _ in baseline] == [status.FIND_ERROR_IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS]


# ------------------------------------------------------------------------------ failures, limits


@pytest.mark.parametrize(
    ("query", "offending"),
    [
        (identifier("PATIENT", PatientID=""), 0x00080052),
        (identifier("", StudyInstanceUID=""), 0x00080052),
        (identifier("STUDY", StudyDate="2026-01-01-2027"), 0x00080020),
        (identifier("STUDY", StudyDate="yesterday"), 0x00080020),
        (identifier("STUDY", StudyTime="25:61"), 0x00080030),
        (identifier("STUDY", StudyDate="20261340"), 0x00080020),
        (identifier("STUDY", StudyInstanceUID="1.2.*"), 0x0020000D),
    ],
)
def test_identifier_does_not_match_sop_class(
    archive: Archive, query: Dataset, offending: int
) -> None:
    result = c_find(archive.node.port, query)
    assert result.statuses == [status.FIND_ERROR_IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS]
    assert result.final.OffendingElement == offending
    assert result.final.ErrorComment


def test_results_stream_in_batches_and_stop_at_the_cap(archive: Archive) -> None:
    query = identifier(
        "IMAGE",
        StudyInstanceUID=archive.study["A"],
        SeriesInstanceUID=archive.series["A1"],
        SOPInstanceUID="",
    )
    batched = direct(archive, query, batch_size=3)
    assert [st for st, _ in batched] == [status.FIND_PENDING] * 10
    assert [ds.SOPInstanceUID for _, ds in batched] == archive.sops["A1"]  # id order
    exact = direct(archive, query, batch_size=3, max_results=10)
    assert [st for st, _ in exact] == [status.FIND_PENDING] * 10
    capped = direct(archive, query, batch_size=3, max_results=4)
    assert [st for st, _ in capped] == [status.FIND_PENDING] * 4 + [
        status.FIND_REFUSED_OUT_OF_RESOURCES
    ]


def test_cancel_between_matches(archive: Archive) -> None:
    query = identifier("STUDY", StudyInstanceUID="")
    service = FindService(archive.node.sessions, archive.node.queries)
    answers: list[int] = []
    for st, _ in service.find(query, is_cancelled=lambda: len(answers) >= 2):
        answers.append(int(getattr(st, "Status", st)))
    assert answers == [status.FIND_PENDING, status.FIND_PENDING, status.FIND_CANCEL]


def test_max_results_from_configuration(node_factory: Callable[..., Any], tmp_path: Path) -> None:
    node = node_factory(query={"max_results": 2})
    files = [write_ct(tmp_path / f"{i}.dcm") for i in range(3)]  # three studies
    results = send_files(node.port, files)
    assert all(r.status is not None and status.is_stored(r.status) for r in results)
    result = c_find(node.port, identifier("STUDY", StudyInstanceUID=""))
    assert result.statuses == [status.FIND_PENDING] * 2 + [status.FIND_REFUSED_OUT_OF_RESOURCES]
    assert result.final.ErrorComment == "more than 2 matches: refine the query"


def test_parse_identifier_resolves_keys_by_level() -> None:
    request = parse_identifier(
        identifier("IMAGE", StudyInstanceUID="1.2", SeriesInstanceUID="1.3", PixelSpacing="")
    )
    pixel_spacing = next(k for k in request.returns if k.keyword == "PixelSpacing")
    assert pixel_spacing.level == "IMAGE"
    request = parse_identifier(
        identifier("SERIES", StudyInstanceUID="1.2", PixelSpacing="", SOPInstanceUID="")
    )
    assert next(k for k in request.returns if k.keyword == "PixelSpacing").level == "SERIES"
    assert request.unsupported == ["SOPInstanceUID"]  # a lower level's key


def test_every_indexed_key_names_a_column_of_its_level() -> None:
    # Keys name their index attribute as text (scp.services.find.keys holds no SQL):
    # each must be a mapped column of its level's entity, and computed keys name none.
    for key in KEYS:
        if key.computed:
            assert key.attribute is None
            with pytest.raises(ValueError):
                index_column(key)
        else:
            assert isinstance(index_column(key), InstrumentedAttribute), key.keyword


# ------------------------------------------------------------------------------ dcmtk findscu


def findscu(port: int, out: Path, *keys: str, root: str = "-S") -> list[Dataset]:
    out.mkdir(parents=True, exist_ok=True)
    args = [dcmtk_tool("findscu"), root, "-aet", "DCMTK", "-aec", "SPACING_SCP", "-X", "-od"]
    args += [str(out), "127.0.0.1", str(port)]
    for key in keys:
        args += ["-k", key]
    done = subprocess.run(args, capture_output=True, text=True, timeout=60, env=dcmtk_env())
    assert done.returncode == 0, done.stderr + done.stdout
    return [dcmread(p, force=True) for p in sorted(out.glob("rsp*.dcm"))]


@pytest.mark.dcmtk
def test_findscu_finds_studies_and_series(archive: Archive, tmp_path: Path) -> None:
    found = findscu(
        archive.node.port,
        tmp_path / "study",
        "QueryRetrieveLevel=STUDY",
        "StudyInstanceUID",
        "PatientID=PAT-*",
        "StudyDate=20250101-20261231",
        "ModalitiesInStudy",
        "NumberOfStudyRelatedInstances",
    )
    by_uid = {str(ds.StudyInstanceUID): ds for ds in found}
    assert set(by_uid) == {archive.study["A"], archive.study["B"]}
    assert list(by_uid[archive.study["A"]].ModalitiesInStudy) == ["CT", "MR"]
    assert by_uid[archive.study["B"]].NumberOfStudyRelatedInstances == 3

    found = findscu(
        archive.node.port,
        tmp_path / "series",
        "QueryRetrieveLevel=SERIES",
        f"StudyInstanceUID={archive.study['A']}",
        "SeriesInstanceUID",
        "Modality",
        "SpacingBetweenSlices",
        "NumberOfSeriesRelatedInstances",
    )
    by_uid = {str(ds.SeriesInstanceUID): ds for ds in found}
    assert set(by_uid) == {archive.series["A1"], archive.series["A2"]}
    ct = by_uid[archive.series["A1"]]
    assert str(ct.SpacingBetweenSlices) == "1.25" and ct.NumberOfSeriesRelatedInstances == 10
    assert by_uid[archive.series["A2"]].SpacingBetweenSlices in (None, "")


@pytest.mark.dcmtk
def test_findscu_image_level_pixel_spacing(archive: Archive, tmp_path: Path) -> None:
    found = findscu(
        archive.node.port,
        tmp_path / "image",
        "QueryRetrieveLevel=IMAGE",
        f"StudyInstanceUID={archive.study['B']}",
        f"SeriesInstanceUID={archive.series['B1']}",
        "SOPInstanceUID",
        "PixelSpacing",
    )
    assert sorted(str(ds.SOPInstanceUID) for ds in found) == sorted(archive.sops["B1"])
    assert all([str(v) for v in ds.PixelSpacing] == ["0.6", "0.4"] for ds in found)


# ------------------------------------------------------------------------------ issue 17


def c_find_model(
    port: int, query: Dataset, model: str, ext_relational: bool | None = None
) -> FindResult:
    """C-FIND in ``model`` (a FIND SOP class UID); ``ext_relational``: ask for relational
    queries in SOP Class Extended Negotiation and check the node's answer."""
    from pynetdicom.pdu_primitives import SOPClassExtendedNegotiation

    ae = AE(ae_title="FINDSCU")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    ae.add_requested_context(model)
    ext = []
    if ext_relational is not None:
        item = SOPClassExtendedNegotiation()
        item.sop_class_uid = model
        item.service_class_application_information = bytes([int(ext_relational)])
        ext.append(item)
    assoc = ae.associate("127.0.0.1", port, ae_title="SPACING_SCP", ext_neg=ext)
    assert assoc.is_established
    try:
        if ext_relational:
            answered = assoc.acceptor.sop_class_extended
            assert answered.get(model) == b"\x01", answered
        responses = list(assoc.send_c_find(query, model))
    finally:
        assoc.release()
    statuses = [int(st.Status) for st, _ in responses]
    return FindResult(
        statuses=statuses,
        identifiers=[ds for st, ds in responses if int(st.Status) in PENDING],
        final=responses[-1][0],
    )


PATIENT_ROOT = "1.2.840.10008.5.1.4.1.2.1.1"
STUDY_ROOT = "1.2.840.10008.5.1.4.1.2.2.1"


def test_patient_name_is_returned_at_the_study_level(archive: Archive) -> None:
    result = c_find(
        archive.node.port,
        identifier("STUDY", StudyInstanceUID="", PatientName="", PatientID=""),
    )
    # PatientName is a Required key of the STUDY level: no 0xFF01 any more
    assert set(result.statuses[:-1]) == {status.FIND_PENDING}
    names = {str(ds.PatientID): str(ds.PatientName) for ds in result.identifiers}
    assert names["PAT-A"] == "Doe^John"
    assert names["P_1%x"] == "Yamada^Tarou=山田^太郎=やまだ^たろう"
    assert names["PA1%x"] == ""


def test_person_name_matching(archive: Archive) -> None:
    # ASCII case-insensitive, wild cards, any component group without "="
    assert study_query(archive, PatientName="doe^john") == {"A", "D"}  # D: unknown name
    strict = {"match_unknown": False}
    query = identifier("STUDY", StudyInstanceUID="", PatientName="DOE*")
    found = direct(archive, query, **strict)
    assert {str(ds.PatientName) for _, ds in found} == {"Doe^John", "DOE^JANE"}
    for value, expected in [
        ("doe^j*", {"A", "B"}),
        ("D?E^JANE", {"B"}),
        ("山田^太郎", {"C"}),  # the ideographic group
        ("YAMADA*", {"C"}),
        ("=山田*", {"C"}),  # group by group
        ("Yamada^Tarou=*", {"C"}),
        ("=Yamada^Tarou", set()),  # not the ideographic group
        ("Smith", set()),
    ]:
        query = identifier("STUDY", StudyInstanceUID="", PatientName=value)
        query.SpecificCharacterSet = "ISO_IR 192"
        found = direct(archive, query, **strict)
        names = {uid: name for name, uid in archive.study.items()}
        assert {names[str(ds.StudyInstanceUID)] for _, ds in found} == expected, value


def test_relational_series_and_image_queries(archive: Archive) -> None:
    # SERIES without Study Instance UID, IMAGE without Series Instance UID (C.4.1.2.2)
    result = c_find(archive.node.port, identifier("SERIES", SeriesInstanceUID="", Modality="MR"))
    assert result.final.Status == status.SUCCESS
    assert [str(ds.SeriesInstanceUID) for ds in result.identifiers] == [archive.series["A2"]]
    result = c_find(
        archive.node.port,
        identifier("IMAGE", StudyInstanceUID=archive.study["B"], SOPInstanceUID=""),
    )
    assert sorted(str(ds.SOPInstanceUID) for ds in result.identifiers) == sorted(archive.sops["B1"])
    # negotiated: the node says yes, and answers even with relational queries switched off
    service = archive.node.handlers.find
    service.relational = False
    try:
        query = identifier("SERIES", SeriesInstanceUID="", Modality="MR")
        refused = c_find_model(archive.node.port, query, STUDY_ROOT)
        assert refused.statuses == [status.FIND_ERROR_IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS]
        assert refused.final.ErrorComment == "SERIES query needs StudyInstanceUID (PS3.4 C.4.1.3.1)"
        accepted = c_find_model(archive.node.port, query, STUDY_ROOT, ext_relational=True)
        assert accepted.statuses == [status.FIND_PENDING, status.SUCCESS]
    finally:
        service.relational = True


def test_patient_root_levels(archive: Archive) -> None:
    port = archive.node.port
    query = identifier("PATIENT", PatientID="PAT-*", PatientName="")
    query.NumberOfPatientRelatedStudies = None
    query.NumberOfPatientRelatedSeries = None
    query.NumberOfPatientRelatedInstances = None
    result = c_find_model(port, query, PATIENT_ROOT)
    assert result.final.Status == status.SUCCESS
    assert result.statuses[:-1] == [status.FIND_PENDING] * 2
    assert {
        (
            str(ds.PatientID),
            str(ds.PatientName),
            int(ds.NumberOfPatientRelatedStudies),
            int(ds.NumberOfPatientRelatedSeries),
            int(ds.NumberOfPatientRelatedInstances),
        )
        for ds in result.identifiers
    } == {("PAT-A", "Doe^John", 1, 2, 11), ("PAT-B", "DOE^JANE", 1, 1, 3)}
    result = c_find_model(
        port, identifier("STUDY", PatientID="PAT-A", StudyInstanceUID=""), PATIENT_ROOT
    )
    assert [str(ds.StudyInstanceUID) for ds in result.identifiers] == [archive.study["A"]]
    result = c_find_model(
        port,
        identifier("SERIES", PatientID="PAT-A", StudyInstanceUID=archive.study["A"], Modality=""),
        PATIENT_ROOT,
    )
    assert sorted(str(ds.Modality) for ds in result.identifiers) == ["CT", "MR"]
    result = c_find_model(
        port,
        identifier(
            "IMAGE",
            PatientID="PAT-B",
            StudyInstanceUID=archive.study["B"],
            SeriesInstanceUID=archive.series["B1"],
            SOPInstanceUID="",
        ),
        PATIENT_ROOT,
    )
    assert len(result.identifiers) == 3
    # PATIENT is not a level of Study Root
    refused = c_find(port, identifier("PATIENT", PatientID=""))
    assert refused.statuses == [status.FIND_ERROR_IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS]


@pytest.mark.parametrize(
    "query",
    [
        identifier("STUDY", StudyDate="2026-01-01-2027" * 8),
        identifier("STUDY", StudyTime="x" * 60),
        identifier("STUDY", StudyDate="2026010" * 9),
        identifier("FRAME"),
    ],
)
def test_error_comments_fit_lo_whole(archive: Archive, query: Dataset) -> None:
    (answer,) = direct_status(archive, query)
    assert answer.Status == status.FIND_ERROR_IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS
    comment = str(answer.ErrorComment)
    assert len(comment) <= 64
    assert comment.endswith(("'", ")", "IMAGE")), comment  # whole, not cut


def test_baseline_error_comments_fit_lo_whole() -> None:
    from scp.services.find import FindError

    for level, keys in [("SERIES", {}), ("IMAGE", {"StudyInstanceUID": "1.2"})]:
        for model in ("STUDY", "PATIENT"):
            with pytest.raises(FindError) as err:
                parse_identifier(identifier(level, **keys), model, relational=False)  # type: ignore[arg-type]
            assert len(err.value.comment) <= 64 and err.value.comment.endswith("C.4.1.3.1)")


def direct_status(archive: Archive, query: Dataset) -> list[Dataset]:
    service = FindService(archive.node.sessions, archive.node.queries)
    return [st for st, _ in service.find(query)]


@pytest.mark.dcmtk
def test_findscu_patient_root_and_relational(archive: Archive, tmp_path: Path) -> None:
    found = findscu(
        archive.node.port,
        tmp_path / "series",
        "QueryRetrieveLevel=SERIES",
        "SeriesInstanceUID",
        "Modality=MR",
    )
    assert [str(ds.SeriesInstanceUID) for ds in found] == [archive.series["A2"]]
    found = findscu(
        archive.node.port,
        tmp_path / "study",
        "QueryRetrieveLevel=STUDY",
        "StudyInstanceUID",
        "PatientName=doe*",
        root="-S",
    )
    assert {str(ds.PatientName) for ds in found} >= {"Doe^John", "DOE^JANE"}
    for level, keys in [
        ("PATIENT", ["PatientID=PAT-A", "PatientName"]),
        ("STUDY", ["PatientID=PAT-A", "StudyInstanceUID"]),
        (
            "SERIES",
            ["PatientID=PAT-A", f"StudyInstanceUID={archive.study['A']}", "SeriesInstanceUID"],
        ),
        (
            "IMAGE",
            [
                "PatientID=PAT-A",
                f"StudyInstanceUID={archive.study['A']}",
                f"SeriesInstanceUID={archive.series['A2']}",
                "SOPInstanceUID",
            ],
        ),
    ]:
        found = findscu(
            archive.node.port,
            tmp_path / level,
            f"QueryRetrieveLevel={level}",
            *keys,
            root="-P",
        )
        assert found, level
        if level == "PATIENT":
            assert [str(ds.PatientName) for ds in found] == ["Doe^John"]
        if level == "IMAGE":
            assert [str(ds.SOPInstanceUID) for ds in found] == archive.sops["A2"]
