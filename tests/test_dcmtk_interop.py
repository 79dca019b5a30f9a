"""dcmtk's echoscu and storescu as independent peers (issue 2)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from storage.models import Instance
from tests.conftest import dcmtk_env, dcmtk_tool
from tests.dicom_factory import new_uid, write_ct

pytestmark = pytest.mark.dcmtk


def test_echoscu(node: Any) -> None:
    echoscu = dcmtk_tool("echoscu")
    out = subprocess.run(
        [echoscu, "-aet", "DCMTK", "-aec", "SPACING_SCP", "127.0.0.1", str(node.port)],
        capture_output=True,
        text=True,
        timeout=60,
        env=dcmtk_env(),
    )
    assert out.returncode == 0, out.stderr


def test_storescu_series(node: Any, tmp_path: Path) -> None:
    storescu = dcmtk_tool("storescu")
    study, series = new_uid(), new_uid()
    folder = tmp_path / "series"
    for i in range(20):
        write_ct(
            folder / f"{i}.dcm",
            study=study,
            series=series,
            position=(0, 0, i * 1.25),
            instance_number=i + 1,
        )
    out = subprocess.run(
        [
            storescu,
            "-aet",
            "CT1",
            "-aec",
            "SPACING_SCP",
            "+sd",
            "-xs",
            "127.0.0.1",
            str(node.port),
            str(folder),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=dcmtk_env(),
    )
    assert out.returncode == 0, out.stderr
    with node.sessions() as s:
        rows = s.scalars(select(Instance)).all()
    assert len(rows) == 20
    assert {r.calling_ae_title for r in rows} == {"CT1"}
    assert all(r.status == 0 for r in rows)


def test_storescu_jpeg_lossless_kept_as_sent(node: Any) -> None:
    from tests.conftest import PYDICOM_TEST_FILES

    storescu = dcmtk_tool("storescu")
    src = PYDICOM_TEST_FILES / "JPEG-LL.dcm"
    if not src.exists():
        from tests.conftest import pydicom_data_dir

        data = pydicom_data_dir()
        assert data is not None
        src = data / "JPEG-LL.dcm"
    out = subprocess.run(
        [
            storescu,
            "-aet",
            "CT1",
            "-aec",
            "SPACING_SCP",
            "-xs",
            "127.0.0.1",
            str(node.port),
            str(src),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=dcmtk_env(),
    )
    assert out.returncode == 0, out.stderr
    with node.sessions() as s:
        [row] = s.scalars(select(Instance)).all()
    assert row.transfer_syntax_uid == "1.2.840.10008.1.2.4.70"
